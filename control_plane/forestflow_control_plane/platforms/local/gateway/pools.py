"""The replicas of each variant on this machine, as the gateway uses them.

A request takes the ready replica with the fewest requests in flight; at zero it waits for a
start (one start shared by every waiting request). A tick samples each variant's concurrency
and starts or drains replicas toward scaling.desired_replicas, one start at a time, so that
min-scale replicas stay warm, load beyond the target adds replicas up to max-scale, and an
idle variant goes to zero after its retention period. A replica takes traffic only once ready
and leaves it before it stops: it is drained (no request in flight is dropped), then stopped.
A replica whose process dies leaves at once; it is restarted when the variant still wants it,
under backoff.py's delays. A request that finds no replica waits out a delay of up to
HOLD_FOR_START_S and one failed start; past that it is answered at once (RestartingError,
HydrationError) rather than held through a runtime that keeps failing.

A Service whose template changes rolls as a new Knative revision would: one replica of the
new template starts beside the old ones, then the oldest-template replica drains, one at a
time, so capacity never drops and a new template that cannot start leaves the old serving.
The artifact an in-place swap already loaded into the running replicas is no such change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from forestflow_control_plane.knative.annotations import VERSION_LABEL
from forestflow_control_plane.knative.resources import contract_of
from forestflow_control_plane.platforms.local.backoff import Backoff
from forestflow_control_plane.platforms.local.gateway.metrics import (
    GatewayMetrics,
    VariantGauges,
    VariantMetrics,
)
from forestflow_control_plane.platforms.local.gateway.templates import runtime_spec, stale
from forestflow_control_plane.platforms.local.gateway.upstream import Upstream
from forestflow_control_plane.platforms.local.supervisor import (
    HydrationError,
    Replica,
    RuntimeSpec,
    Supervisor,
)
from forestflow_control_plane.policies.autoscaling import (
    Autoscaling,
    Sample,
    autoscaling_of,
    desired_replicas,
)

MAX_WAITERS = 1000
DRAIN_TIMEOUT_S = 60.0
LOST_GRACE_S = 0.1
HOLD_FOR_START_S = 2.0
MAX_STARTS = 2  # a request waits through at most this many starts that fail

log = logging.getLogger("forestflow.pools")


class OverloadedError(RuntimeError):
    """Too many requests are already waiting for this variant to hydrate."""


class RemovedError(LookupError):
    """The variant's Service went while a request waited for its replica (a rollout rolled
    back, say): the request is routed again, by the Route as it is now."""


class RestartingError(RuntimeError):
    """The variant's runtime keeps failing; no start before `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(eq=False)
class Member:
    """A ready replica taking traffic: its process, its kept-alive connections, its load."""

    replica: Replica
    upstream: Upstream
    started_at: float
    spec: RuntimeSpec  # the template it was started from
    inflight: int = 0
    drained: asyncio.Event | None = None  # set once draining and nothing is in flight


class Pool:
    """One variant's replicas and the load it saw; the gateway calls take and give_back."""

    def __init__(
        self, key: str, spec: RuntimeSpec, scaling: Autoscaling, metrics: VariantMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.key, self.spec, self.scaling, self.metrics = key, spec, scaling, metrics
        self.members: list[Member] = []
        self.starting: asyncio.Task[Member] | None = None
        self.waiters = 0
        self.backoff = Backoff()
        self.samples: deque[Sample] = deque()
        self.last_active: float | None = None
        self.removed = False
        self.new = scaling.initial_scale > 0  # until it first has initial-scale replicas
        self._clock = clock
        self._load = 0  # requests forwarded or waiting for a replica
        self._area = 0.0  # integral of _load over time since the last sample
        self._arrived = 0  # requests that took a member since the last sample
        self._changed_at = self._tick_at = clock()

    @property
    def inflight(self) -> int:
        return self._load

    def take(self) -> Member | None:
        """The ready member with the fewest requests in flight, now counting one more."""
        members = self.members
        if not members:
            return None
        member = members[0] if len(members) == 1 else min(members, key=_inflight)
        member.inflight += 1
        self._arrived += 1
        self.loaded(1)
        return member

    def give_back(self, member: Member) -> None:
        member.inflight -= 1
        self.loaded(-1)
        if member.drained is not None and member.inflight == 0:
            member.drained.set()

    def loaded(self, delta: int) -> None:
        now = self._clock()
        self._area += self._load * (now - self._changed_at)
        self._changed_at = self.last_active = now
        self._load += delta

    def sample(self, now: float) -> None:
        """Close the tick: record the mean concurrency and the arrival rate since the last."""
        self._area += self._load * (now - self._changed_at)
        span = now - self._tick_at
        if span > 0:
            self.samples.append(Sample(now, self._area / span, self._arrived / span))
        self._area, self._arrived, self._changed_at, self._tick_at = 0.0, 0, now, now
        while self.samples and self.samples[0].at <= now - self.scaling.window_s:
            self.samples.popleft()
        if self._load:
            self.last_active = now

    def desired(self, now: float) -> int:
        return desired_replicas(self.scaling, self.samples, self.last_active, now, self.new)


class Pools:
    def __init__(
        self,
        supervisor: Supervisor,
        metrics: GatewayMetrics,
        hydrate_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._supervisor = supervisor
        self._metrics = metrics
        self._hydrate_timeout = hydrate_timeout
        self._clock = clock
        self._pools: dict[str, Pool] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.changed = False  # replicas came or went since the gateway last published

    def get(self, key: str) -> Pool | None:
        return self._pools.get(key)

    def sync(self, services: dict[str, dict[str, Any]]) -> None:
        """Track the given services (a bad one is logged and left out), retire the others,
        and start the replicas that min-scale wants."""
        for key in [key for key in self._pools if key not in services]:
            self._retire(self._pools.pop(key))
        for key, service in services.items():
            try:
                spec, scaling = runtime_spec(key, service), autoscaling_of(service)
            except (KeyError, ValueError) as exc:
                log.error("service %s left out: %s", key, exc)
                continue
            pool = self._pools.get(key)
            if pool is None:
                version = service["metadata"]["labels"][VERSION_LABEL]
                metrics = self._metrics.variant(str(contract_of(service)), version)
                self._pools[key] = Pool(key, spec, scaling, metrics, self._clock)
            else:
                pool.spec, pool.scaling = spec, scaling
        now = self._clock()
        for pool in self._pools.values():
            self._converge(pool, now)

    async def wait(self, pool: Pool) -> Member:
        """A member for a request that found none ready: join the start under way or begin
        one, once a backoff due within HOLD_FOR_START_S is over, and one more if that start
        fails (a replica or two that died young, killed say, cost a request some latency,
        not an error). Raises HydrationError if the starts fail, RestartingError while a
        longer backoff holds, RemovedError if the variant goes meanwhile."""
        if pool.waiters >= MAX_WAITERS:
            raise OverloadedError(f"{pool.key}: {MAX_WAITERS} requests already waiting")
        pool.waiters += 1
        pool.loaded(1)
        failed = 0
        try:
            while not pool.members:
                due = pool.backoff.not_before - self._clock()
                if pool.starting is None and 0 < due <= HOLD_FOR_START_S:
                    await asyncio.sleep(due)
                    continue
                start = pool.starting or self._begin_start(pool, self._clock())
                try:
                    await _join(pool, start)
                except HydrationError:
                    failed += 1
                    if failed == MAX_STARTS:
                        raise
        finally:
            pool.waiters -= 1
            pool.loaded(-1)
        member = pool.take()
        assert member is not None
        return member

    async def lost(self, pool: Pool, member: Member, refused: bool) -> None:
        """The member's connection failed. If nothing listens on its port (`refused`), or
        its process is gone or goes within a moment (a killed process resets its
        connections just before it can be seen to exit), it leaves the pool now, before its
        exit watch tells, and a retry cannot reach it."""
        member.upstream.reset()
        if not refused:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(member.replica.process.wait(), LOST_GRACE_S)
        if refused or not member.replica.process.running:
            self._left(pool, member)

    def tick(self) -> None:
        """Sample every pool's load, forgive the failures of a pool whose replica has stayed
        up, and move each toward the replicas it wants."""
        now = self._clock()
        for pool in self._pools.values():
            pool.sample(now)
            if pool.backoff.failures and pool.members:
                oldest = min(m.started_at for m in pool.members)
                pool.backoff = pool.backoff.settled(now - oldest)
            self._converge(pool, now)

    def status(self) -> dict[str, tuple[bool, int]]:
        return {key: (bool(p.members), len(p.members)) for key, p in self._pools.items()}

    def gauges(self, percents: Callable[[str], int]) -> Iterator[VariantGauges]:
        for key, pool in self._pools.items():
            contract, version = pool.metrics.labels
            yield VariantGauges(contract, version, pool.inflight, len(pool.members), percents(key))

    async def close(self) -> None:
        for pool in self._pools.values():
            self._retire(pool)
        self._pools.clear()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _converge(self, pool: Pool, now: float) -> None:
        if pool.removed or pool.starting is not None:
            return
        wanted, ready = pool.desired(now), len(pool.members)
        rolling = ready == wanted and any(stale(m.spec, pool.spec) for m in pool.members)
        if (ready < wanted or rolling) and pool.backoff.allows(now):
            self._begin_start(pool, now)
        elif ready > wanted:
            # Going to zero drains them all; scaling down drains an old template's replica
            # first, then the least busy, the newest of equals.
            def order(member: Member) -> tuple[bool, int, float]:
                return (not stale(member.spec, pool.spec), member.inflight, -member.started_at)

            surplus = pool.members if wanted == 0 else [min(pool.members, key=order)]
            for member in list(surplus):
                self._drain(pool, member)

    def _begin_start(self, pool: Pool, now: float) -> asyncio.Task[Member]:
        if not pool.backoff.allows(now):
            wait = pool.backoff.not_before - now
            raise RestartingError(
                f"{pool.key} keeps failing ({pool.backoff.failures} in a row); "
                f"next start in {wait:.1f} s", wait,
            )
        pool.starting = self._spawn(self._start(pool, hydrating=not pool.members))
        return pool.starting

    async def _start(self, pool: Pool, hydrating: bool) -> Member:
        if pool.backoff.failures:
            pool.metrics.restarted()
        began, spec = self._clock(), pool.spec
        try:
            replica = await self._supervisor.start(spec, self._hydrate_timeout)
        except HydrationError as exc:
            now = self._clock()
            pool.backoff = pool.backoff.failed(now)
            if hydrating:
                pool.metrics.hydrated(False, now - began)
            log.warning("%s did not start (%d in a row): %s", pool.key, pool.backoff.failures, exc)
            raise
        finally:
            pool.starting = None
        now = self._clock()
        if hydrating:
            pool.metrics.hydrated(True, now - began)
        # A pool retired meanwhile cancelled this start: supervisor.start killed the replica.
        member = Member(replica, Upstream("127.0.0.1", replica.port), started_at=now, spec=spec)
        pool.members.append(member)
        if pool.new and len(pool.members) >= pool.scaling.initial_scale:
            pool.new, pool.last_active = False, now  # retention counts from here
        self.changed = True
        self._spawn(self._watch(pool, member))
        return member

    async def _watch(self, pool: Pool, member: Member) -> None:
        await member.replica.process.wait()
        self._left(pool, member)

    def _left(self, pool: Pool, member: Member) -> None:
        """A member's process exited unasked, or stopped listening (a drained member has
        already left); it is stopped and replaced."""
        if member not in pool.members:
            return
        pool.members.remove(member)
        member.upstream.close()
        self.changed = True
        now = self._clock()
        pool.backoff = pool.backoff.failed(now)
        log.warning(
            "%s: replica on port %d lost unasked after %.1f s",
            pool.key, member.replica.port, now - member.started_at,
        )
        self._spawn(self._supervisor.stop(member.replica))  # reaps it, drops its PID file
        self._converge(pool, now)

    def _drain(self, pool: Pool, member: Member) -> None:
        pool.members.remove(member)
        self.changed = True
        self._spawn(self._stop(member))

    async def _stop(self, member: Member) -> None:
        if member.inflight:
            member.drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await member.drained.wait()
        member.upstream.close()
        await self._supervisor.stop(member.replica)

    def _retire(self, pool: Pool) -> None:
        """The service is gone: stop starting, drain and stop every replica."""
        pool.removed = True
        if pool.starting is not None:
            pool.starting.cancel()
        for member in list(pool.members):
            self._drain(pool, member)
        contract, version = pool.metrics.labels
        self._metrics.forget(contract, version)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, even for a start nobody waited on
        if exc is not None and not isinstance(exc, HydrationError):  # those _start logs
            log.error("pool task failed", exc_info=exc)


async def _join(pool: Pool, start: asyncio.Task[Member]) -> Member:
    try:
        return await asyncio.shield(start)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if start.cancelled() and (task is None or not task.cancelling()):
            raise RemovedError(f"{pool.key}: the variant was removed while it started") from None
        raise


def _inflight(member: Member) -> int:
    return member.inflight
