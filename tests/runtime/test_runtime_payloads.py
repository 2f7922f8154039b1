"""Payload events: sampled request/response pairs land in a Redis stream, off the hot path."""

import dataclasses
import time
from pathlib import Path
from typing import cast

import httpx
import orjson
from redis import Redis

from forestflow_runtime.config import PayloadConfig
from tests.runtime.runtime_harness import (
    free_port,
    metric,
    running_server,
    save_affine,
    state_dict_config,
    wait_until,
)

X = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]]


def infer(url: str, request_id: str) -> httpx.Response:
    body = {
        "id": request_id,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X}],
    }
    return httpx.post(f"{url}/v2/models/affine/infer", json=body)


def test_events_reach_the_stream(
    code_dir: Path, tmp_path: Path, redis: Redis, redis_url: str
) -> None:
    weights = save_affine(tmp_path / "w.safetensors", seed=1)
    payloads = PayloadConfig(sample_rate=1.0, redis_url=redis_url, stream="test:payloads")
    config = dataclasses.replace(state_dict_config(code_dir, weights), payloads=payloads)
    with running_server(config) as server:
        before = time.time()
        replies = [infer(server.url, f"r{i}") for i in range(3)]
        after = time.time()
        assert all(r.status_code == 200 for r in replies)
        wait_until(lambda: redis.xlen("test:payloads") == 3, what="three events")
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis.xrange("test:payloads"))
    events = [fields for _, fields in entries]
    assert [e[b"request_id"] for e in events] == [b"r0", b"r1", b"r2"]
    first = events[0]
    assert (first[b"contract"], first[b"variant"]) == (b"tests/affine", b"v1")
    assert orjson.loads(first[b"inputs"]) == {
        "x": {"shape": [2, 4], "data": [v for row in X for v in row]}
    }
    outputs = orjson.loads(first[b"outputs"])
    assert outputs["y"]["shape"] == [2, 3]
    assert outputs["y"]["data"] == replies[0].json()["outputs"][0]["data"]
    assert float(first[b"latency_ms"]) > 0
    assert before <= float(first[b"time"]) <= after  # wall-clock seconds, taken as it finished


def test_absent_redis_never_holds_up_inference(code_dir: Path, tmp_path: Path) -> None:
    # Recording never waits on Redis: with no Redis to take the events, the bounded buffer
    # fills and further events are dropped, counted, while every request is answered.
    weights = save_affine(tmp_path / "w.safetensors", seed=1)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    payloads = PayloadConfig(sample_rate=1.0, redis_url=nowhere, max_buffer=2)
    config = dataclasses.replace(state_dict_config(code_dir, weights), payloads=payloads)
    with running_server(config) as server:
        replies = [infer(server.url, f"r{i}") for i in range(10)]
        assert all(r.status_code == 200 for r in replies)
        wait_until(
            lambda: (
                metric(
                    httpx.get(f"{server.url}/metrics").text,
                    "forestflow_payload_events_dropped_total",
                )
                >= 8
            ),
            what="drops counted",
        )
