"""Serving behaviour over real HTTP: readiness, batching, back-pressure, deadlines, disconnects.

The model is a state dict (safetensors) + a Python class imported via the code path. Where the
outcome depends on the model being busy, a Gate holds its calls: the test, not a sleep, decides
when a call ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from tests.runtime.runtime_harness import (
    GUARD_S,
    Gate,
    affine_reference,
    metric,
    running_server,
    save_affine,
    save_gated,
    state_dict_config,
    until_inflight,
    wait_until,
)

ROW = [[1.0, 2.0, 3.0, 4.0]]


def infer_body(x: list[list[float]]) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(x), 4], "data": x}]}


def test_state_dict_model_answers_like_torch(code_dir: Path, tmp_path: Path) -> None:
    weights = save_affine(tmp_path / "w.safetensors", seed=3)
    x = [[0.1, 0.2, 0.3, 0.4], [4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 1.0]]
    with running_server(state_dict_config(code_dir, weights)) as server:
        reply = httpx.post(f"{server.url}/v2/models/affine/infer", json=infer_body(x))
        assert reply.status_code == 200, reply.text
        got = np.reshape(reply.json()["outputs"][0]["data"], (3, 3))
        np.testing.assert_allclose(got, affine_reference(3, torch.tensor(x)).numpy(), rtol=1e-5)


def test_ready_only_after_warm_up(code_dir: Path, tmp_path: Path, gate: Gate) -> None:
    weights = save_gated(tmp_path / "w.safetensors", seed=1, gate=gate)
    config = state_dict_config(code_dir, weights, gated=True)
    with running_server(config, wait_ready=False) as server:
        gate.wait_arrived(1)  # the warm-up pass has begun, and is held there
        held_from = time.perf_counter()
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{server.url}/v2/models/affine/ready").status_code == 503
        early = httpx.post(f"{server.url}/v2/models/affine/infer", json=infer_body(ROW))
        assert early.status_code == 503
        held = time.perf_counter() - held_from
        gate.open()
        wait_until(server.ready, what="ready after warm-up")
        # The load began before the warm-up was held and ended after its release: its time
        # spans the hold, whatever the machine's speed.
        load_s = metric(httpx.get(f"{server.url}/metrics").text, "forestflow_model_load_seconds")
        assert load_s >= held


def test_lone_request_skips_a_long_window(code_dir: Path, tmp_path: Path) -> None:
    # A request that waited for the window would meet its deadline first, and answer 504.
    weights = save_affine(tmp_path / "w.safetensors", seed=1)
    config = state_dict_config(code_dir, weights, window_ms=600_000, request_timeout_ms=60_000)
    with running_server(config) as server:
        reply = httpx.post(f"{server.url}/v1/affine/predict", json={"input": ROW}, timeout=90)
        assert reply.status_code == 200, reply.text


async def test_concurrent_requests_are_batched(code_dir: Path, tmp_path: Path, gate: Gate) -> None:
    weights = save_gated(tmp_path / "w.safetensors", seed=1, gate=gate)
    gate.let_through()  # the warm-up
    with running_server(state_dict_config(code_dir, weights, gated=True)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client:
            xs = [[[float(i), 1.0, 2.0, 3.0]] for i in range(24)]
            posts = [
                asyncio.create_task(client.post("/v1/models/affine:predict", json={"instances": x}))
                for x in xs
            ]
            await until_inflight(client, 24)  # one held in the model, the others queued
            gate.open()
            replies = await asyncio.gather(*posts)
            text = (await client.get("/metrics")).text
    for x, reply in zip(xs, replies, strict=True):
        assert reply.status_code == 200
        want = affine_reference(1, torch.tensor(x)).numpy()
        np.testing.assert_allclose(reply.json()["predictions"], want, rtol=1e-5)
    batches = metric(text, "forestflow_batch_size_count")
    assert metric(text, "forestflow_batch_size_sum") == 24
    assert batches < 24, "no request shared a batch"


async def test_full_queue_answers_503_with_retry_after(
    code_dir: Path, tmp_path: Path, gate: Gate
) -> None:
    weights = save_gated(tmp_path / "w.safetensors", seed=1, gate=gate)
    gate.let_through()  # the warm-up
    config = state_dict_config(code_dir, weights, gated=True, max_queue=1, max_batch_size=1)
    with running_server(config) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client:

            def predict() -> asyncio.Task[httpx.Response]:
                return asyncio.create_task(client.post("/v1/affine/predict", json={"input": ROW}))

            running = predict()
            await gate.arrival(2)  # the first holds the model
            queued = predict()
            await until_inflight(client, 2)  # the second fills the queue
            rejected = [await predict(), await predict()]
            gate.open()
            assert [(await running).status_code, (await queued).status_code] == [200, 200]
            text = (await client.get("/metrics")).text
    assert [r.status_code for r in rejected] == [503, 503]
    assert all(r.headers["retry-after"] == "1" for r in rejected)
    assert "queue is full" in rejected[0].json()["error"]
    assert metric(text, "forestflow_rejected_requests_total") == len(rejected)


async def test_deadline_answers_504_while_the_model_is_busy(
    code_dir: Path, tmp_path: Path, gate: Gate
) -> None:
    weights = save_gated(tmp_path / "w.safetensors", seed=1, gate=gate)
    gate.let_through()  # the warm-up
    with running_server(state_dict_config(code_dir, weights, gated=True)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client:
            busy = asyncio.create_task(client.post("/v1/affine/predict", json={"input": ROW}))
            await gate.arrival(2)  # the model holds it until the gate opens
            reply = await client.post(
                "/v2/models/affine/infer",
                json=infer_body(ROW),
                headers={"X-Request-Timeout-Ms": "50"},
            )
            assert reply.status_code == 504
            assert not busy.done()
            text = (await client.get("/metrics")).text
            assert metric(text, "forestflow_deadline_exceeded_total") == 1
            assert 'code="504"' in text
            gate.open()
            assert (await busy).status_code == 200


def test_server_wide_timeout_applies_without_header(
    code_dir: Path, tmp_path: Path, gate: Gate
) -> None:
    weights = save_gated(tmp_path / "w.safetensors", seed=1, gate=gate)
    gate.let_through()  # the warm-up
    config = state_dict_config(code_dir, weights, gated=True, request_timeout_ms=50)
    with running_server(config) as server:
        reply = httpx.post(f"{server.url}/v1/affine/predict", json={"input": ROW})
        assert reply.status_code == 504
        gate.open()


async def test_disconnected_client_is_dropped_before_the_model(
    code_dir: Path, tmp_path: Path, gate: Gate
) -> None:
    # The busy request holds the model, at the gate, until the disconnect has been seen.
    weights = save_gated(tmp_path / "w.safetensors", seed=1, gate=gate)
    gate.let_through()  # the warm-up
    with running_server(state_dict_config(code_dir, weights, gated=True)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client:
            busy = asyncio.create_task(client.post("/v1/affine/predict", json={"input": ROW}))
            await gate.arrival(2)
            async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as impatient:
                abandoned = asyncio.create_task(
                    impatient.post("/v1/affine/predict", json={"input": ROW})
                )
                await until_inflight(client, 2)  # queued behind the busy one
                abandoned.cancel()
            deadline = time.monotonic() + GUARD_S
            while 'code="499"' not in (await client.get("/metrics")).text:
                assert time.monotonic() < deadline, "the server never saw the disconnect"
                await asyncio.sleep(0.005)
            assert not busy.done()
            gate.open()
            assert (await busy).status_code == 200
            assert (await client.post("/v1/affine/predict", json={"input": ROW})).status_code == 200
            text = (await client.get("/metrics")).text
    assert metric(text, "forestflow_batch_size_count") == 2, "the abandoned request ran"


def test_cpu_threads_apply_on_the_model_thread(code_dir: Path, tmp_path: Path) -> None:
    """torch's (OpenMP's) thread count is per thread: set on the main thread only, the model's
    worker thread would not see it."""
    weights = save_affine(tmp_path / "w.safetensors", seed=1)
    config = state_dict_config(code_dir, weights)
    config = dataclasses.replace(
        config,
        cpu_threads=1,
        source=dataclasses.replace(config.source, model_class="ffnets:Threads"),
    )
    before = torch.get_num_threads()
    try:
        with running_server(config) as server:
            reply = httpx.post(f"{server.url}/v1/affine/predict", json={"input": ROW})
    finally:
        torch.set_num_threads(before)
    assert reply.status_code == 200, reply.text
    assert reply.json()["output"] == [[1.0, 1.0, 1.0]]


def _exchange(url: str, request: bytes) -> bytes:
    """Send `request` on a new connection; the answer, read until its JSON body ends or the
    server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=GUARD_S) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
    return answer


def test_a_body_over_the_limit_is_413_before_it_is_read_whole(
    code_dir: Path, tmp_path: Path
) -> None:
    weights = save_affine(tmp_path / "w.safetensors", seed=1)
    config = dataclasses.replace(state_dict_config(code_dir, weights), max_request_bytes=1024)
    head = "POST /v1/affine/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    with running_server(config) as server:
        declared = _exchange(server.url, f"{head}content-length: 10000000\r\n\r\n{{".encode())
        assert declared.startswith(b"HTTP/1.1 413 ")
        assert b"body: 10000000 bytes, over the limit of 1024" in declared
        chunk = b'{"input": [' + b"0.0, " * 300
        chunked = _exchange(server.url, f"{head}transfer-encoding: chunked\r\n\r\n".encode()
                            + b"%x\r\n%s\r\n" % (len(chunk), chunk))
        assert chunked.startswith(b"HTTP/1.1 413 ")
        assert b"body: over the limit of 1024 bytes" in chunked
        assert _exchange(server.url, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        ok = httpx.post(f"{server.url}/v1/affine/predict", json={"input": [[1.0, 2.0, 3.0, 4.0]]})
        assert ok.status_code == 200
