"""The shadow mirror's tests' harness: a contract with shadows deployed on real Redis, a
mirror consuming in the test's event loop with targets straight at runtimes, the
primary's traffic, and what the mirror recorded."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
import yaml
from redis import Redis

from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.shadows.exporter import MirrorMetrics
from forestflow_control_plane.shadows.mirror import Mirror, MirrorConfig
from forestflow_control_plane.shadows.plan import Plans
from forestflow_control_plane.shadows.results import ShadowResult, report
from forestflow_control_plane.shadows.targets import Target
from forestflow_control_plane.spec.model_file import validate_model_file
from forestflow_control_plane.state.store import Store
from tests.control_plane.memory_platform import MemoryPlatform
from tests.support import REPO

C = "examples/mlp"
STREAM = "forestflow:payloads"
GROUP = "forestflow-mirror"
REQUESTS = 8
ROWS = 4  # per request


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


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 120.0) -> None:
    """Poll an async condition with a deadline (a bound for a loaded machine, not a budget),
    yielding to the mirror in between."""
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
