"""A replica that dies is replaced: requests in flight on it are sent again, new ones wait for
the restart, and a runtime that keeps failing is retried under a growing backoff, requests
meanwhile refused at once once it grew past a short hold. The gateway process keeps its own
time, so the backoff's growth is shown on its pools with a clock the test moves."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable

import httpx
import pytest

from forestflow_control_plane.platforms.local.backoff import restart_delay
from forestflow_control_plane.platforms.local.gateway.metrics import GatewayMetrics
from forestflow_control_plane.platforms.local.gateway.pools import Pools, RestartingError
from forestflow_control_plane.platforms.local.supervisor import HydrationError, Replica, RuntimeSpec
from tests.support import eventually

from . import test_gateway as harness
from .test_gateway import INPUT, A, Harness, served
from .test_gateway_scaling import under_load
from .test_pools import KEY, service

# The harness's fixtures, by name: one gateway process for this module too.
gateway, gw, mlp = harness.gateway, harness.gw, harness.mlp


def test_a_killed_replica_is_restarted_and_no_request_fails(gw: Harness) -> None:
    gw.deploy("crash/scoring", {"v1": 100})
    url, labels = gw.predict_url("crash/scoring"), {"contract": "crash/scoring", "version": "v1"}
    eventually(lambda: served(gw, url), 60, "the contract to be served")
    (first,) = gw.runtime_pids("crash_")

    statuses = under_load(
        url,
        lambda: os.kill(first, signal.SIGKILL),
        lambda: gw.runtime_pids("crash_") not in ([], [first]),
        "a new runtime",
    )
    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} failed"
    assert gw.metric("forestflow_gateway_restarts_total", **labels) == 1
    assert gw.metric("forestflow_gateway_replicas", **labels) == 1
    assert first not in gw.runtime_pids("crash_")


def test_a_runtime_that_keeps_failing_is_retried_and_refused_at_once_meanwhile(
    gw: Harness,
) -> None:
    gw.deploy("broken/scoring", {"v1": 100}, uri="nope.safetensors",
              annotations={A + "min-scale": "1"})
    url, labels = gw.predict_url("broken/scoring"), {"contract": "broken/scoring", "version": "v1"}

    def failures() -> float:
        return gw.metric("forestflow_gateway_hydrations_total", outcome="failure", **labels)

    eventually(lambda: failures() >= 3, 60, "three failed starts")
    # A request that lands while a start runs shares its failure; one that lands while the
    # backoff holds (a window that only grows) is refused at once.
    refusals: list[httpx.Response] = []

    def refused() -> bool:
        reply = httpx.post(url, json=INPUT, timeout=60)
        if reply.status_code == 503 and "keeps failing" in reply.text:
            refusals.append(reply)
        return bool(refusals)

    eventually(refused, 60, "a request refused while the backoff holds")
    (refusal,) = refusals
    found = re.search(r"\((\d+) in a row\); next start in ([\d.]+) s", refusal.json()["error"])
    assert found is not None, refusal.text
    in_a_row, wait = int(found[1]), float(found[2])
    assert in_a_row >= 3 and wait <= restart_delay(in_a_row)
    # Retry-After is the stated wait in whole seconds, rounded up, never 0.
    retry_after = int(refusal.headers["retry-after"])
    assert retry_after >= 1 and wait <= retry_after < wait + 1, (retry_after, wait)
    eventually(lambda: failures() > in_a_row, 60, "the start after the backoff")
    assert gw.metric("forestflow_gateway_restarts_total", **labels) >= 3


class SteppedClock:
    """Monotonic seconds that move only when the test sets `now`."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


class FailingSupervisor:
    """A supervisor whose every start fails; it notes the clock at each."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.starts: list[float] = []

    async def start(self, spec: RuntimeSpec, timeout: float) -> Replica:
        self.starts.append(self.clock())
        raise HydrationError("bad weights")

    async def stop(self, replica: Replica, grace: float = 0.0) -> None:
        raise AssertionError("no replica ever started")


async def test_each_restart_of_a_runtime_that_keeps_failing_waits_longer() -> None:
    clock = SteppedClock()
    supervisor = FailingSupervisor(clock)
    metrics = GatewayMetrics(lambda: [])
    pools = Pools(supervisor, metrics, hydrate_timeout=5, clock=clock)  # type: ignore[arg-type]
    pools.sync({KEY: service(min_scale=1)})
    pool = pools.get(KEY)
    assert pool is not None

    async def settled() -> None:
        """Until the start the last sync or tick began has failed."""
        async with asyncio.timeout(5):
            while pool.starting is not None:
                await asyncio.sleep(0)

    await settled()
    refusal: RestartingError | None = None
    for tenths in range(81):
        clock.now = tenths / 10
        if tenths == 40:  # five failures: the next start is due at 7.5 s, past the hold
            with pytest.raises(RestartingError) as refused:
                await pools.wait(pool)
            refusal = refused.value
        pools.tick()
        await settled()
    await pools.close()
    # At once after the first failure, then 0.5 s, 1 s, 2 s and 4 s after the next ones.
    assert supervisor.starts == [0.0, 0.0, 0.5, 1.5, 3.5, 7.5]
    assert refusal is not None and refusal.retry_after == 3.5
    assert "keeps failing (5 in a row)" in str(refusal)
