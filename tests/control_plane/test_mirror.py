"""The shadow mirror against real Redis and real runtime processes: the primary samples its
requests onto the payload stream, the mirror replays them to shadows and records how the
answers compare. Targets point straight at the runtimes, not through a gateway."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest
from redis import Redis

from forestflow_control_plane import names
from tests.support import REPO, eventually, example_mlp, free_port, serving

from .mirror_support import (
    GROUP,
    REQUESTS,
    ROWS,
    STREAM,
    C,
    batches,
    deploy,
    infer,
    mirroring,
    results,
    sample,
    send,
    settled,
    until,
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example MLP with two sets of weights: mlp.safetensors and other.safetensors."""
    return example_mlp(tmp_path_factory.mktemp("mlp"), mlp=0, other=1)


@contextlib.contextmanager
def runtimes(envs: dict[str, dict[str, str]], logs: Path) -> Iterator[dict[str, str]]:
    """`python -m forestflow_runtime` per entry, started together; their URLs once ready."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FF_")}
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, env in envs.items():
            port = free_port()
            with (logs / f"{name}.log").open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "forestflow_runtime"],
                    env={**base, **env, "FF_HOST": "127.0.0.1", "FF_PORT": str(port)},
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                )
            started[name] = (process, f"http://127.0.0.1:{port}")
        for name, (process, url) in started.items():
            eventually(functools.partial(_ready, process, url), 120, f"runtime {name} ready")
            assert process.poll() is None, (logs / f"{name}.log").read_text()
        yield {name: url for name, (_, url) in started.items()}
    finally:
        for process, _ in started.values():
            process.terminate()
        for process, _ in started.values():
            process.wait(timeout=30)


def _ready(process: subprocess.Popen[bytes], url: str) -> bool:
    if process.poll() is not None:
        return True
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def urls(
    weights: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The primary v1 (samples every request onto the stream), and two runtimes to stand
    for shadows: `same` serves v1's weights, `other` different ones."""

    def env(uri: str, version: str) -> dict[str, str]:
        return {
            "FF_CONTRACT": C,
            "FF_VARIANT": version,
            "FF_MODEL_NAME": "mlp",
            "FF_MODEL_URI": str(weights / uri),
            "FF_MODEL_FORMAT": "state_dict",
            "FF_MODEL_CLASS": "model:MLP",
            "FF_MODEL_CODE_PATH": str(weights),
            "FF_INPUTS": '[{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]',
            "FF_OUTPUTS": '[{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]',
        }

    primary = {**env("mlp.safetensors", "v1"), "FF_PAYLOAD_SAMPLE_RATE": "1",
               "FF_REDIS_URL": redis_url}
    envs = {
        "primary": primary,
        "same": env("mlp.safetensors", "shadow"),
        "other": env("other.safetensors", "shadow"),
    }
    with runtimes(envs, tmp_path_factory.mktemp("logs")) as started:
        yield started


async def test_a_shadow_with_the_same_weights_agrees_on_every_row(
    redis: Redis, redis_url: str, urls: dict[str, str]
) -> None:
    deploy(redis, {"v2": 1.0})
    async with mirroring(redis_url, {"v2": urls["same"]}) as metrics:
        await send(urls["primary"], batches(1))
        await until(lambda: settled(redis), "every entry mirrored")
    result = results(redis)["v2"]
    assert (result.requests, result.compared, result.agreed, result.errors) == (
        REQUESTS, REQUESTS * ROWS, REQUESTS * ROWS, 0
    )
    assert result.agreement == 1.0
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-6
    assert result.mean_abs_diff is not None and result.mean_abs_diff < 1e-6
    assert result.primary_versions == ["v1"]
    for side in (result.latency_ms.primary, result.latency_ms.shadow):
        assert side.p50 is not None and side.p95 is not None and 0 < side.p50 <= side.p95
    pair = {"contract": C, "shadow": "v2"}
    assert sample(metrics, "forestflow_shadow_compared_total", **pair) == REQUESTS * ROWS
    assert sample(metrics, "forestflow_shadow_agreed_total", **pair) == REQUESTS * ROWS
    assert sample(metrics, "forestflow_shadow_errors_total", **pair) == 0
    assert sample(metrics, "forestflow_shadow_max_abs_diff", **pair) < 1e-6
    for variant in ("v1", "v2"):
        labels = {"contract": C, "variant": variant}
        assert sample(metrics, "forestflow_shadow_latency_seconds_count", **labels) == REQUESTS
    assert b"forestflow_shadow_compared_total" in generate_latest(metrics.registry)


SLOW_LINK_S = 1.0


@contextlib.contextmanager
def slow_link(upstream: str) -> Iterator[tuple[str, list[str]]]:
    """A proxy to `upstream` that holds each answer SLOW_LINK_S: a far network, or a busy
    gateway, between the mirror and a shadow. Yields its URL and, as they pass, the `infer`
    durations (ms, as written) of the Server-Timing headers it forwards."""
    stated: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with httpx.AsyncClient() as client:
            answer = await client.post(upstream + scope["path"], content=body,
                                       headers={"content-type": "application/json"})
        await asyncio.sleep(SLOW_LINK_S)
        stated.extend(re.findall(r"infer;dur=([0-9.]+)", answer.headers.get("server-timing", "")))
        headers = [(k.encode(), v.encode()) for k, v in answer.headers.items()
                   if k in ("content-type", "server-timing")]
        await send({"type": "http.response.start", "status": answer.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": answer.content})

    with serving(app, free_port()) as url:
        yield url, stated


async def test_shadow_latency_is_the_shadow_runtimes_own_not_the_round_trip(
    redis: Redis, redis_url: str, urls: dict[str, str]
) -> None:
    deploy(redis, {"v2": 1.0})
    with slow_link(urls["same"]) as (far, stated):
        async with mirroring(redis_url, {"v2": far}):
            await send(urls["primary"], batches(3))
            await until(lambda: settled(redis), "every entry mirrored")
    result = results(redis)["v2"]
    assert result.errors == 0 and result.agreement == 1.0
    shadow = result.latency_ms.shadow
    assert shadow.p50 is not None and shadow.p95 is not None and 0 < shadow.p50 <= shadow.p95
    # Each round trip through the link took SLOW_LINK_S and more; what the mirror recorded is,
    # answer for answer, the time the shadow runtime stated for itself, however long that was.
    samples = redis.lrange(names.shadow_latency_key(C, "v2", "shadow"), 0, -1)
    assert len(stated) == REQUESTS
    assert sorted(float(ms) for ms in samples) == sorted(float(ms) for ms in stated)


async def test_a_shadow_with_other_weights_disagrees_where_the_class_differs(
    redis: Redis, redis_url: str, urls: dict[str, str]
) -> None:
    deploy(redis, {"v2": 1.0})
    xs = batches(2)
    async with mirroring(redis_url, {"v2": urls["other"]}):
        primary = await send(urls["primary"], xs)
        await until(lambda: settled(redis), "every entry mirrored")
    shadow = [await infer(urls["other"], x, "direct") for x in xs]
    pairs = list(zip(primary, shadow, strict=True))
    same_class = [np.argmax(p, -1) == np.argmax(s, -1) for p, s in pairs]
    agreed = int(sum(s.sum() for s in same_class))
    diffs = np.concatenate([np.abs(p - s).ravel() for p, s in pairs])
    assert 0 < agreed < REQUESTS * ROWS, "the test needs rows that agree and rows that do not"
    result = results(redis)["v2"]
    assert (result.compared, result.agreed, result.errors) == (REQUESTS * ROWS, agreed, 0)
    assert result.agreement == pytest.approx(agreed / (REQUESTS * ROWS))
    assert result.max_abs_diff == pytest.approx(diffs.max(), rel=1e-5)
    assert result.mean_abs_diff == pytest.approx(diffs.mean(), rel=1e-5)


async def test_failing_shadows_count_errors_and_the_mirror_keeps_going(
    redis: Redis, redis_url: str, urls: dict[str, str]
) -> None:
    """v2 is dead (nothing listens), v4 answers 404; v3 beside them is compared as usual."""
    deploy(redis, {"v2": 1.0, "v3": 1.0, "v4": 1.0})
    targets = {
        "v2": f"http://127.0.0.1:{free_port()}",
        "v3": urls["same"],
        "v4": f"{urls['same']}/elsewhere",
    }
    async with mirroring(redis_url, targets) as metrics:
        await send(urls["primary"], batches(3))
        await until(lambda: settled(redis), "every entry mirrored")
    found = results(redis)
    for failing in ("v2", "v4"):
        result = found[failing]
        assert (result.errors, result.compared, result.agreement) == (REQUESTS, 0, None)
        assert result.max_abs_diff is None and result.latency_ms.shadow.p50 is None
    assert (found["v3"].errors, found["v3"].agreed) == (0, REQUESTS * ROWS)
    assert sample(metrics, "forestflow_shadow_errors_total", contract=C, shadow="v2") == REQUESTS


async def test_a_shadow_sampled_at_half_gets_the_drawn_half(
    redis: Redis, redis_url: str, urls: dict[str, str]
) -> None:
    """v1 logs every request itself, so a shadow at 0.5 gets each with probability 0.5."""
    deploy(redis, {"v2": 0.5}, primary_logging=1.0)
    expected = random.Random(5)
    want = sum(expected.random() < 0.5 for _ in range(REQUESTS))
    async with mirroring(redis_url, {"v2": urls["same"]}, random.Random(5).random):
        await send(urls["primary"], batches(4))
        await until(lambda: settled(redis), "every entry mirrored")
    assert 0 < want < REQUESTS
    assert results(redis)["v2"].requests == want


async def test_entries_a_killed_mirror_left_are_claimed_and_never_counted_twice(
    redis: Redis, redis_url: str, urls: dict[str, str]
) -> None:
    deploy(redis, {"v2": 1.0})

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    hanging = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = hanging.sockets[0].getsockname()[1]
    async with mirroring(redis_url, {"v2": f"http://127.0.0.1:{port}"}, consumer="dying"):
        await send(urls["primary"], batches(5))

        async def all_in_flight() -> bool:
            return bool(redis.xpending(STREAM, GROUP)["pending"] == REQUESTS)

        await until(all_in_flight, "every entry in flight on the dying mirror")
    hanging.close()
    assert results(redis)["v2"].requests == 0
    async with mirroring(
        redis_url, {"v2": urls["same"]}, replay_timeout_s=3.0, claim_idle_s=3.5, consumer="next"
    ):
        await until(lambda: settled(redis), "the pending entries claimed and mirrored")
        assert results(redis)["v2"].requests == REQUESTS
        redis.xgroup_setid(STREAM, GROUP, "0")  # every entry delivered once more
        await until(lambda: settled(redis), "the entries redelivered")
    result = results(redis)["v2"]
    assert (result.requests, result.agreed, result.errors) == (REQUESTS, REQUESTS * ROWS, 0)
