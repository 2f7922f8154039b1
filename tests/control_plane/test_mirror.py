"""The shadow mirror against real Redis and real runtime processes: the primary samples its
requests onto the payload stream, the mirror replays them to shadows and records how the
answers compare. Targets point straight at the runtimes, not through a gateway."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client import generate_latest
from redis import Redis

from forestflow_control_plane.composition import Parts
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.settings import Settings, SettingsError
from forestflow_control_plane.shadows.exporter import MirrorMetrics
from forestflow_control_plane.shadows.mirror import Mirror, MirrorConfig
from forestflow_control_plane.shadows.plan import Plans
from forestflow_control_plane.shadows.results import ShadowResult, report
from forestflow_control_plane.shadows.targets import Target
from forestflow_control_plane.spec.model_file import validate_model_file
from forestflow_control_plane.state.store import Store
from tests.control_plane.memory_platform import MemoryPlatform
from tests.support import REPO, eventually, example_mlp, free_port, serving

C = "examples/mlp"
STREAM = "forestflow:payloads"
GROUP = "forestflow-mirror"
REQUESTS = 8
ROWS = 4  # per request


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


def deploy(redis: Redis, shadows: dict[str, float], primary_logging: float = 0.0) -> Store:
    """examples/mlp with v1 serving 100 % and each of `shadows` (version: sample rate)
    running as a shadow."""
    store = Store(redis)
    rollouts = Rollouts(store, MemoryPlatform(), lambda call: None)
    base = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
    base["variant"]["payload_logging"] = {"sample_rate": primary_logging}
    register(store, validate_model_file(base), who="t")
    rollouts.start(C, "v1")
    for version, rate in shadows.items():
        data = {**base, "shadow": {"sample_rate": rate}}
        data["variant"] = {**base["variant"], "version": version, "payload_logging": {}}
        register(store, validate_model_file(data), who="t")
        rollouts.start(C, version)
    return store


class Direct:
    """Shadow targets straight at runtime processes, by version."""

    def __init__(self, by_version: dict[str, str]) -> None:
        self.by_version = by_version

    def target(self, contract: str, version: str) -> Target:
        return Target(self.by_version[version])


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    """Poll an async condition with a deadline, yielding to the mirror in between."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def mirroring(
    redis_url: str,
    targets: dict[str, str],
    draw: Callable[[], float] = random.random,
    **config: Any,
) -> AsyncIterator[MirrorMetrics]:
    """A mirror consuming in this event loop until the block ends (then it stops as a
    killed one would: what it had not acknowledged stays pending)."""
    metrics = MirrorMetrics()
    settings = MirrorConfig(**{"block_ms": 50, "consumer": "m1", **config})
    sync = Redis.from_url(redis_url)
    async with aioredis.Redis.from_url(redis_url) as redis, httpx.AsyncClient() as http:
        plans = Plans(Store(sync).get, ttl_s=0.5)
        mirror = Mirror(redis, plans, Direct(targets), http, metrics, settings, draw)
        task = asyncio.create_task(mirror.run())
        await until(lambda: _has_group(redis), "the consumer group")
        try:
            yield metrics
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            sync.close()


async def _has_group(redis: aioredis.Redis) -> bool:
    with contextlib.suppress(aioredis.ResponseError):
        return any(g["name"] == GROUP.encode() for g in await redis.xinfo_groups(STREAM))
    return False


def batches(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(ROWS, 4)).astype(np.float32) for _ in range(REQUESTS)]


async def infer(url: str, x: np.ndarray, request_id: str) -> np.ndarray:
    body = {"id": request_id,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v2/models/mlp/infer", json=body)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    return np.array(output["data"], dtype=np.float64).reshape(output["shape"])


async def send(primary: str, xs: list[np.ndarray]) -> list[np.ndarray]:
    return [await infer(primary, x, f"r{i}") for i, x in enumerate(xs)]


def results(redis: Redis) -> dict[str, ShadowResult]:
    return {r.version: r for r in report(redis, Store(redis).get(C))}


async def settled(redis: Redis, entries: int = REQUESTS) -> bool:
    """All `entries` on the stream (the runtime appends in the background), every one
    delivered to the group and acknowledged."""
    stream = redis.xinfo_stream(STREAM)
    group = next(g for g in redis.xinfo_groups(STREAM) if g["name"] == GROUP.encode())
    delivered = group["last-delivered-id"] == stream["last-generated-id"]
    return bool(stream["length"] == entries and delivered and group["pending"] == 0)


def sample(metrics: MirrorMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


TARGETS = [
    ("local: the gateway, by the Service's host", Settings(Path("/h"), "redis://r"),
     Target("http://127.0.0.1:8080", "ff-mlp-v2.examples.forestflow.local")),
    ("local, another gateway and domain",
     Settings(Path("/h"), "redis://r", gateway_port=9000, domain="ml.example"),
     Target("http://127.0.0.1:9000", "ff-mlp-v2.examples.ml.example")),
    ("knative: the Service's cluster-local name",
     Settings(Path("/h"), "redis://r", platform="knative"),
     Target("http://ff-mlp-v2.examples.svc.cluster.local")),
]


@pytest.mark.parametrize(("name", "settings", "want"), TARGETS, ids=[t[0] for t in TARGETS])
def test_where_a_shadow_is_reached(name: str, settings: Settings, want: Target) -> None:
    assert Parts(settings).shadow_targets().target(C, "v2") == want


PORTS: list[tuple[str, dict[str, str], int | None]] = [
    ("unset: no metrics server", {}, None),
    ("empty: none either", {"FF_MIRROR_METRICS_PORT": ""}, None),
    ("a port", {"FF_MIRROR_METRICS_PORT": "9108"}, 9108),
]


@pytest.mark.parametrize(("name", "env", "want"), PORTS, ids=[p[0] for p in PORTS])
def test_mirror_metrics_port_setting(name: str, env: dict[str, str], want: int | None) -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://r", **env})
    assert settings.mirror_metrics_port == want
    assert Settings.from_env(settings.to_env()).mirror_metrics_port == want


def test_a_bad_mirror_metrics_port_is_named() -> None:
    with pytest.raises(SettingsError, match="FF_MIRROR_METRICS_PORT: not a port number"):
        Settings.from_env({"REDIS_URL": "redis://r", "FF_MIRROR_METRICS_PORT": "metrics"})


def test_claims_must_wait_longer_than_a_replay() -> None:
    with pytest.raises(ValueError, match="claim_idle_s: must exceed replay_timeout_s"):
        MirrorConfig(replay_timeout_s=30, claim_idle_s=30)


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


SLOW_LINK_S = 0.3


@contextlib.contextmanager
def slow_link(upstream: str) -> Iterator[str]:
    """A proxy to `upstream` that holds each answer SLOW_LINK_S: a far network, or a busy
    gateway, between the mirror and a shadow."""

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
        headers = [(k.encode(), v.encode()) for k, v in answer.headers.items()
                   if k in ("content-type", "server-timing")]
        await send({"type": "http.response.start", "status": answer.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": answer.content})

    with serving(app, free_port()) as url:
        yield url


async def test_shadow_latency_is_the_shadow_runtimes_own_not_the_round_trip(
    redis: Redis, redis_url: str, urls: dict[str, str]
) -> None:
    deploy(redis, {"v2": 1.0})
    with slow_link(urls["same"]) as far:
        async with mirroring(redis_url, {"v2": far}):
            await send(urls["primary"], batches(3))
            await until(lambda: settled(redis), "every entry mirrored")
    result = results(redis)["v2"]
    assert result.errors == 0 and result.agreement == 1.0
    shadow = result.latency_ms.shadow
    assert shadow.p50 is not None and shadow.p95 is not None
    assert 0 < shadow.p50 <= shadow.p95 < SLOW_LINK_S * 1000 / 2


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
        redis_url, {"v2": urls["same"]}, replay_timeout_s=0.2, claim_idle_s=0.3, consumer="next"
    ):
        await until(lambda: settled(redis), "the pending entries claimed and mirrored")
        assert results(redis)["v2"].requests == REQUESTS
        redis.xgroup_setid(STREAM, GROUP, "0")  # every entry delivered once more
        await until(lambda: settled(redis), "the entries redelivered")
    result = results(redis)["v2"]
    assert (result.requests, result.agreed, result.errors) == (REQUESTS, REQUESTS * ROWS, 0)


def test_the_mirror_process_serves_metrics_and_stops_on_sigterm(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FF_")}
    env.update(REDIS_URL=redis_url, FF_HOME=str(tmp_path), FF_MIRROR_METRICS_PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "forestflow_control_plane", "mirror"], env=env, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        def metrics_served() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with contextlib.suppress(httpx.TransportError):
                return "forestflow_shadow_compared_total" in httpx.get(
                    f"http://127.0.0.1:{port}/metrics"
                ).text
            return False

        eventually(metrics_served, 30, "the mirror's /metrics")
        eventually(lambda: redis.exists(STREAM) == 1, 30, "the stream and its group")
        assert [g["name"] for g in redis.xinfo_groups(STREAM)] == [GROUP.encode()]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
