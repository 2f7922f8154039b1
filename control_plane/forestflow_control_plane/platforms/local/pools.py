"""The replicas of each variant on this machine: hydrate on demand (one start shared by
every waiting request), least-connection choice, dehydrate after the retention window."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from forestflow_control_plane.platforms.local.supervisor import (
    Replica,
    RuntimeSpec,
    Supervisor,
)

RETENTION = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"
MAX_WAITERS = 1000


class OverloadedError(RuntimeError):
    """Too many requests are already waiting for this variant to hydrate."""


@dataclass
class Pool:
    spec: RuntimeSpec
    retention_s: float
    replicas: list[Replica] = field(default_factory=list)
    hydrating: asyncio.Task[Replica] | None = None
    waiters: int = 0
    last_used: float = 0.0

    @property
    def inflight(self) -> int:
        return sum(r.inflight for r in self.replicas)


class Pools:
    def __init__(
        self,
        supervisor: Supervisor,
        hydrate_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._supervisor = supervisor
        self._hydrate_timeout = hydrate_timeout
        self._clock = clock
        self._pools: dict[str, Pool] = {}

    def sync(self, services: dict[str, dict[str, Any]]) -> list[Pool]:
        """Track the given services; return the pools of services no longer desired."""
        gone = [self._pools.pop(key) for key in list(self._pools) if key not in services]
        for key, service in services.items():
            spec = runtime_spec(key, service)
            retention = retention_seconds(service)
            pool = self._pools.get(key)
            if pool is None:
                self._pools[key] = Pool(spec, retention)
            else:
                pool.spec, pool.retention_s = spec, retention
        return gone

    @contextlib.asynccontextmanager
    async def replica(self, service: str) -> AsyncIterator[Replica]:
        """A ready replica with the fewest requests in flight, hydrating if needed."""
        pool = self._pools[service]
        replica = await self._ready(pool)
        replica.inflight += 1
        pool.last_used = self._clock()
        try:
            yield replica
        finally:
            replica.inflight -= 1
            pool.last_used = self._clock()

    def status(self) -> dict[str, tuple[bool, int]]:
        return {key: (bool(p.replicas), len(p.replicas)) for key, p in self._pools.items()}

    async def reap(self) -> list[str]:
        """Dehydrate every idle pool past its retention; return their service keys."""
        now = self._clock()
        idle = [
            (key, pool)
            for key, pool in self._pools.items()
            if pool.replicas and pool.inflight == 0 and now - pool.last_used >= pool.retention_s
        ]
        for _, pool in idle:
            await self.stop_pool(pool)
        return [key for key, _ in idle]

    async def stop_pool(self, pool: Pool) -> None:
        replicas, pool.replicas = pool.replicas, []
        if pool.hydrating is not None:
            pool.hydrating.cancel()
        await asyncio.gather(*(self._supervisor.stop(r) for r in replicas))

    async def close(self) -> None:
        await asyncio.gather(*(self.stop_pool(p) for p in self._pools.values()))

    async def _ready(self, pool: Pool) -> Replica:
        alive = [r for r in pool.replicas if r.process.running]
        if len(alive) != len(pool.replicas):
            pool.replicas = alive
        if alive:
            return min(alive, key=lambda r: r.inflight)
        if pool.waiters >= MAX_WAITERS:
            raise OverloadedError(f"{pool.spec.service}: {MAX_WAITERS} requests already waiting")
        if pool.hydrating is None:
            pool.hydrating = asyncio.create_task(self._hydrate(pool))
        pool.waiters += 1
        try:
            return await asyncio.shield(pool.hydrating)
        finally:
            pool.waiters -= 1

    async def _hydrate(self, pool: Pool) -> Replica:
        try:
            replica = await self._supervisor.start(pool.spec, self._hydrate_timeout)
            pool.replicas.append(replica)
            pool.last_used = self._clock()
            return replica
        finally:
            pool.hydrating = None


def runtime_spec(key: str, service: dict[str, Any]) -> RuntimeSpec:
    container = service["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    ready = container.get("readinessProbe", {}).get("httpGet", {}).get("path", "/v2/health/ready")
    return RuntimeSpec(service=key, env=env, ready_path=ready)


def retention_seconds(service: dict[str, Any]) -> float:
    annotations = service["spec"]["template"]["metadata"].get("annotations", {})
    return parse_duration(annotations.get(RETENTION, "60s"))


def parse_duration(text: str) -> float:
    """Knative's durations as the local platform uses them: `90s`, `1.5s`, `500ms`, `2m`."""
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, scale in units:
        if text.endswith(suffix) and not (suffix == "s" and text.endswith("ms")):
            return float(text[: -len(suffix)]) * scale
    raise ValueError(f"not a duration: {text!r}")
