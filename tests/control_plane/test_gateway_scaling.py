"""The gateway scales a variant between min-scale and max-scale on real runtime processes:
load beyond the target adds replicas, a quiet stable window drains them (no request lost),
retention takes the last one unless min-scale keeps it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import orjson

from tests.support import eventually

from . import test_gateway as harness
from .test_gateway import INPUT, A, Harness, served, until

# The harness's fixtures, by name: one gateway process for this module too.
gateway, gw, mlp = harness.gateway, harness.gw, harness.mlp


async def clients(url: str, count: int, stop: asyncio.Event, statuses: list[int]) -> None:
    """`count` clients calling back to back until `stop`, every status kept."""
    body, headers = orjson.dumps(INPUT), {"content-type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def loop() -> None:
            while not stop.is_set():
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses.append(response.status)

        await asyncio.gather(*(loop() for _ in range(count)))


def under_load(
    url: str, change: Callable[[], object], done: Callable[[], bool], what: str
) -> list[int]:
    """Four clients call `url`; after 50 answers `change` runs; once `done` holds and 50 more
    are answered, the clients stop. Returns every status."""

    async def scenario() -> list[int]:
        statuses: list[int] = []
        stop = asyncio.Event()
        load = asyncio.create_task(clients(url, 4, stop, statuses))
        await until(lambda: len(statuses) >= 50, 30, "traffic flowing")
        change()
        await until(done, 60, what)
        served_before = len(statuses)
        await until(lambda: len(statuses) >= served_before + 50, 30, "traffic after " + what)
        stop.set()
        await load
        return statuses

    return asyncio.run(scenario())


def test_load_beyond_target_scales_up_to_max_then_drains_back_losing_nothing(
    gw: Harness,
) -> None:
    # A 50 ms batch window keeps each request in flight that long, so that six clients are
    # six requests in flight however slow the clients themselves are.
    gw.deploy("scale/scoring", {"v1": 100}, batch_window_ms=50, annotations={
        A + "target": "1", A + "max-scale": "3", A + "window": "1s",
        A + "scale-to-zero-pod-retention-period": "1s",
    })
    url, labels = gw.predict_url("scale/scoring"), {"contract": "scale/scoring", "version": "v1"}
    eventually(lambda: served(gw, url), 60, "the contract to be served")

    def replicas() -> float:
        return gw.metric("forestflow_gateway_replicas", **labels)

    async def scenario() -> tuple[list[int], int]:
        statuses: list[int] = []
        most = 0

        def at(count: int) -> bool:
            nonlocal most
            most = max(most, len(gw.runtime_pids("scale_")))
            return replicas() == count

        heavy, light = asyncio.Event(), asyncio.Event()
        load = asyncio.create_task(clients(url, 6, heavy, statuses))
        await until(lambda: at(3), 60, "three replicas under six clients at target 1")
        heavy.set()
        await load
        # One client at a time is one replica's worth: the others drain while it calls.
        load = asyncio.create_task(clients(url, 1, light, statuses))
        await until(lambda: at(1), 30, "the extra replicas drained after the window")
        light.set()
        await load
        await until(lambda: at(0), 30, "zero replicas after the retention period")
        return statuses, most

    statuses, most = asyncio.run(scenario())
    assert most == 3
    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} failed"
    eventually(lambda: not gw.runtime_pids("scale_"), 15, "every runtime process stopped")


def test_min_scale_keeps_one_replica_warm_past_the_retention_period(gw: Harness) -> None:
    short = {A + "scale-to-zero-pod-retention-period": "1s"}
    gw.deploy("warm/scoring", {"v1": 100}, annotations={**short, A + "min-scale": "1"})
    eventually(lambda: len(gw.runtime_pids("warm_")) == 1, 60, "min-scale warm before a request")
    (warm,) = gw.runtime_pids("warm_")
    assert served(gw, gw.predict_url("warm/scoring"))
    gw.deploy("cold/scoring", {"v1": 100}, annotations=short)
    eventually(lambda: served(gw, gw.predict_url("cold/scoring")), 60, "the cold one served")
    # Both went idle, the warm one first: once retention has taken the cold one...
    eventually(lambda: not gw.runtime_pids("cold_"), 15, "the cold variant to go to zero")
    # ...it has passed for the warm one too, which min-scale kept.
    assert gw.runtime_pids("warm_") == [warm]
    labels = {"contract": "warm/scoring", "version": "v1"}
    assert gw.metric("forestflow_gateway_replicas", **labels) == 1


def test_a_changed_template_rolls_the_replica_under_load_losing_nothing(gw: Harness) -> None:
    gw.deploy("roll/scoring", {"v1": 100}, annotations={A + "min-scale": "1"})
    url, labels = gw.predict_url("roll/scoring"), {"contract": "roll/scoring", "version": "v1"}
    eventually(lambda: served(gw, url), 60, "the contract to be served")
    (old,) = gw.runtime_pids("roll_")

    statuses = under_load(
        url,
        lambda: gw.deploy("roll/scoring", {"v1": 100}, annotations={A + "min-scale": "1"},
                          batch_window_ms=3.0),
        lambda: len(pids := gw.runtime_pids("roll_")) == 1 and old not in pids,
        "the old replica replaced",
    )
    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} failed"
    (new,) = gw.runtime_pids("roll_")
    assert new != old
    assert gw.metric("forestflow_gateway_replicas", **labels) == 1
    assert gw.metric("forestflow_gateway_restarts_total", **labels) == 0
