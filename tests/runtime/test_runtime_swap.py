"""Hot swap in place: under load with no failed request, old batches finish on the old model,
failed swaps leave the old model serving, and http(s) URIs are downloaded. Where the order of
a model call and a swap decides the outcome, Gates hold the calls until the test lets them go.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from tests.runtime.runtime_harness import (
    GUARD_S,
    Gate,
    affine_reference,
    running_server,
    save_affine,
    save_gated,
    state_dict_config,
)

X = [[1.0, -2.0, 0.5, 3.0]]
LOAD = "/v2/repository/models/affine/load"


def reference(seed: int) -> np.ndarray:
    return affine_reference(seed, torch.tensor(X)).numpy()


async def predict(client: httpx.AsyncClient) -> np.ndarray:
    reply = await client.post("/v1/affine/predict", json={"input": X})
    assert reply.status_code == 200, reply.text
    return np.asarray(reply.json()["output"])


async def test_swap_under_load_fails_nothing_and_flips(code_dir: Path, tmp_path: Path) -> None:
    old = save_affine(tmp_path / "old.safetensors", seed=1, delay_s=0.01)
    new = save_affine(tmp_path / "new.safetensors", seed=2, delay_s=0.01)
    swapped, warmed = asyncio.Event(), asyncio.Event()
    seen: list[np.ndarray] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        after_swap = 0
        while after_swap < 5:
            seen.append(await predict(client))
            after_swap += swapped.is_set()
            if len(seen) >= 20:
                warmed.set()

    with running_server(state_dict_config(code_dir, old, slow=True)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client:
            clients = [asyncio.create_task(client_loop(client)) for _ in range(8)]
            async with asyncio.timeout(GUARD_S):
                await warmed.wait()
            reply = await client.post(LOAD, json={"parameters": {"uri": str(new)}})
            swapped.set()
            assert reply.status_code == 200, reply.text
            assert reply.json()["uri"] == str(new)
            await asyncio.gather(*clients)
            np.testing.assert_allclose(await predict(client), reference(2), rtol=1e-5)
            metrics = (await client.get("/metrics")).text
    olds = sum(np.allclose(out, reference(1), rtol=1e-5) for out in seen)
    news = sum(np.allclose(out, reference(2), rtol=1e-5) for out in seen)
    assert olds >= 20 and news >= 8 and olds + news == len(seen)
    assert 'forestflow_swaps_total{contract="tests/affine",model="affine",result="ok"' in metrics


async def test_running_batch_finishes_on_the_old_model(
    code_dir: Path, tmp_path: Path, gates: Callable[[], Gate]
) -> None:
    old_gate, new_gate = gates(), gates()
    old = save_gated(tmp_path / "old.safetensors", seed=1, gate=old_gate)
    new = save_gated(tmp_path / "new.safetensors", seed=2, gate=new_gate)
    old_gate.let_through()  # its warm-up
    new_gate.open()
    with running_server(state_dict_config(code_dir, old, gated=True)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client:
            running = asyncio.create_task(predict(client))
            await old_gate.arrival(2)  # it reached the old model, which holds it
            reply = await client.post(LOAD, json={"parameters": {"uri": str(new)}})
            assert reply.status_code == 200, reply.text
            assert not running.done()
            old_gate.open()
            np.testing.assert_allclose(await running, reference(1), rtol=1e-5)
            np.testing.assert_allclose(await predict(client), reference(2), rtol=1e-5)


FAILED_SWAPS = [
    ("missing file", {"parameters": {"uri": "/nonexistent/w.safetensors"}}, 500, "does not exist"),
    ("corrupt file", {"parameters": {"uri": "CORRUPT"}}, 500, "state_dict model"),
    ("bad format", {"parameters": {"uri": "x", "format": "tf"}}, 400, "parameters.format"),
    ("pickle refused", {"parameters": {"uri": "x", "format": "sklearn"}}, 500, "FF_ALLOW_PICKLE"),
    ("no uri", {"parameters": {}}, 400, "parameters.uri"),
]


@pytest.mark.parametrize(
    ("body", "status", "message"), [r[1:] for r in FAILED_SWAPS], ids=[r[0] for r in FAILED_SWAPS]
)
async def test_failed_swap_keeps_the_old_model(
    code_dir: Path, tmp_path: Path, body: dict[str, dict[str, str]], status: int, message: str
) -> None:
    old = save_affine(tmp_path / "old.safetensors", seed=1)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    if body["parameters"].get("uri") == "CORRUPT":
        body["parameters"]["uri"] = str(corrupt)
    with running_server(state_dict_config(code_dir, old)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client:
            reply = await client.post(LOAD, json=body)
            assert reply.status_code == status, reply.text
            assert message in reply.json()["error"]
            assert (await client.get("/v2/health/ready")).status_code == 200
            np.testing.assert_allclose(await predict(client), reference(1), rtol=1e-5)
            assert (
                await client.post("/v2/repository/models/other/load", json=body)
            ).status_code == 404


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server over tmp_path, for http:// model URIs."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_swap_downloads_http_uri(code_dir: Path, tmp_path: Path, file_server: str) -> None:
    old = save_affine(tmp_path / "old.safetensors", seed=1)
    save_affine(tmp_path / "new.safetensors", seed=2)
    with running_server(state_dict_config(code_dir, old)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client:
            uri = f"{file_server}/new.safetensors"
            reply = await client.post(LOAD, json={"parameters": {"uri": uri}})
            assert reply.status_code == 200, reply.text
            np.testing.assert_allclose(await predict(client), reference(2), rtol=1e-5)
            missing = await client.post(LOAD, json={"parameters": {"uri": f"{file_server}/no"}})
            assert missing.status_code == 500 and "404" in missing.json()["error"]


async def index(client: httpx.AsyncClient) -> dict[str, object]:
    """The model's entry in the repository index: the artifact it serves, those it loads."""
    reply = await client.post("/v2/repository/index")
    assert reply.status_code == 200, reply.text
    (entry,) = reply.json()
    return dict(entry)


async def until_arrived(gates: list[Gate], timeout_s: float = GUARD_S) -> None:
    """Until a call has reached one of `gates`."""
    async with asyncio.timeout(timeout_s):
        while not any(gate.arrived for gate in gates):
            await asyncio.sleep(0.005)


async def test_concurrent_swaps_are_serialised(
    code_dir: Path, tmp_path: Path, gates: Callable[[], Gate]
) -> None:
    old_gate = gates()
    old_gate.open()
    old = save_gated(tmp_path / "old.safetensors", seed=1, gate=old_gate)
    swaps = {seed: gates() for seed in (2, 3)}  # each swap's warm-up waits at its own gate
    uris = [save_gated(tmp_path / f"{seed}.safetensors", seed, swaps[seed]) for seed in swaps]
    with running_server(state_dict_config(code_dir, old, gated=True)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=GUARD_S) as client:
            replies = [
                asyncio.create_task(client.post(LOAD, json={"parameters": {"uri": str(uri)}}))
                for uri in uris
            ]
            await until_arrived(list(swaps.values()))
            first, second = sorted(swaps, key=lambda seed: -swaps[seed].arrived)
            # While the first swap warms up, the second waits for it: it has not begun its own.
            assert swaps[second].arrived == 0
            by_seed = dict(zip(swaps, map(str, uris), strict=True))
            assert await index(client) == {
                "name": "affine", "version": "v1", "state": "READY", "uri": str(old),
                "format": "state_dict",
                "loading": [{"uri": by_seed[s], "format": "state_dict"} for s in (first, second)],
            }
            swaps[first].open()
            await swaps[second].arrival(1)
            # The first swap finished before the second began: its model serves meanwhile.
            np.testing.assert_allclose(await predict(client), reference(first), rtol=1e-5)
            swaps[second].open()
            assert [(await reply).status_code for reply in replies] == [200, 200]
            np.testing.assert_allclose(await predict(client), reference(second), rtol=1e-5)
            assert await index(client) == {
                "name": "affine", "version": "v1", "state": "READY", "uri": by_seed[second],
                "format": "state_dict",
            }

