"""Pools with a supervisor whose replicas are stand-ins: which failed replica leaves (one that
refuses connections goes at once even while its process lingers; one that only dropped a
connection stays), how a changed template rolls, and what a request waiting for a start
meets when the start fails or the variant goes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from forestflow_control_plane.knative.annotations import CONTRACT_LABEL, VERSION_LABEL
from forestflow_control_plane.platforms.local.gateway.metrics import GatewayMetrics
from forestflow_control_plane.platforms.local.gateway.pools import Pool, Pools, RemovedError
from forestflow_control_plane.platforms.local.supervisor import HydrationError, Replica, RuntimeSpec

KEY = "fraud-scoring-v1"


def service(min_scale: int = 1, **env: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {CONTRACT_LABEL: "fraud.scoring", VERSION_LABEL: "v1"}},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": str(min_scale)}},
            "spec": {"containers": [{"env": [{"name": k, "value": v} for k, v in env.items()]}]},
        }},
    }


class LingeringProcess:
    """A process that is still running until told to exit."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._exited = asyncio.Event()

    @property
    def running(self) -> bool:
        return not self._exited.is_set()

    def send_signal(self, sig: signal.Signals) -> None:
        self._exited.set()

    async def wait(self) -> None:
        await self._exited.wait()


class FakeSupervisor:
    """Starts a lingering process per replica and records the replicas stopped."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Replica] = []
        self.stopped: list[Replica] = []
        self.log: list[str] = []  # "start N" and "stop N", in order
        self.release = asyncio.Event()  # a start completes once set
        self.release.set()

    async def start(self, spec: RuntimeSpec, timeout: float) -> Replica:
        n = len(self.started)
        replica = Replica(LingeringProcess(n), 40000 + n, self.tmp / f"{n}.pid")
        self.started.append(replica)
        await self.release.wait()
        self.log.append(f"start {n}")
        return replica

    async def stop(self, replica: Replica, grace: float = 0.0) -> None:
        replica.process.send_signal(signal.SIGTERM)
        self.stopped.append(replica)
        self.log.append(f"stop {replica.process.pid}")


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)


def _ready(pool: Pool) -> Callable[[], bool]:
    return lambda: bool(pool.members) and pool.starting is None


async def _pool_with_members(
    tmp_path: Path, count: int = 1, **env: str
) -> tuple[Pools, Pool, FakeSupervisor]:
    supervisor = FakeSupervisor(tmp_path)
    pools = Pools(supervisor, GatewayMetrics(lambda: []), hydrate_timeout=5)  # type: ignore[arg-type]
    pools.sync({KEY: service(count, **env)})
    pool = pools.get(KEY)
    assert pool is not None
    for _ in range(count):
        await _until(_ready(pool))
        pools.tick()
    await _until(lambda: len(pool.members) == count)
    return pools, pool, supervisor


async def test_a_replica_that_refuses_leaves_at_once_and_is_replaced(tmp_path: Path) -> None:
    pools, pool, supervisor = await _pool_with_members(tmp_path)
    (member,) = pool.members
    await pools.lost(pool, member, refused=True)
    assert member not in pool.members
    await _until(lambda: bool(supervisor.stopped))
    assert supervisor.stopped == [member.replica]
    await _until(_ready(pool))  # min-scale 1 brings a new one
    assert [m.replica for m in pool.members] == [supervisor.started[1]]
    await pools.close()


async def test_a_replica_that_dropped_a_connection_and_lives_stays(tmp_path: Path) -> None:
    pools, pool, supervisor = await _pool_with_members(tmp_path)
    (member,) = pool.members
    await pools.lost(pool, member, refused=False)
    assert pool.members == [member]
    assert supervisor.stopped == []
    await pools.close()


async def test_a_changed_template_rolls_one_replica_at_a_time_new_before_old(
    tmp_path: Path,
) -> None:
    pools, pool, supervisor = await _pool_with_members(tmp_path, 2, FF_PAYLOAD_SAMPLE_RATE="0")
    supervisor.release.clear()
    pools.sync({KEY: service(2, FF_PAYLOAD_SAMPLE_RATE="0.5")})
    await _until(lambda: len(supervisor.started) == 3)
    assert len(pool.members) == 2 and supervisor.stopped == []  # the old serve meanwhile
    supervisor.release.set()
    async with asyncio.timeout(5):
        while len(supervisor.log) < 6:
            await _until(_ready(pool))
            pools.tick()
            assert len(pool.members) >= 2
            await asyncio.sleep(0)
    assert supervisor.log == ["start 0", "start 1", "start 2", "stop 1", "start 3", "stop 0"]
    await _until(lambda: {m.replica.process.pid for m in pool.members} == {2, 3})
    pools.tick()
    assert len(supervisor.started) == 4  # rolled, and then left alone
    await pools.close()


async def test_a_new_template_that_cannot_start_leaves_the_old_replicas_serving(
    tmp_path: Path,
) -> None:
    pools, pool, supervisor = await _pool_with_members(tmp_path, 1, FF_BATCH_WINDOW_MS="2")

    async def refuse(spec: RuntimeSpec, timeout: float) -> Replica:
        raise HydrationError("bad weights")

    supervisor.start = refuse  # type: ignore[method-assign]
    pools.sync({KEY: service(1, FF_BATCH_WINDOW_MS="5")})
    await _until(lambda: pool.backoff.failures == 1 and pool.starting is None)
    assert [m.replica.process.pid for m in pool.members] == [0]
    assert supervisor.stopped == []
    await pools.close()


async def test_an_artifact_swapped_in_place_does_not_roll(tmp_path: Path) -> None:
    pools, pool, supervisor = await _pool_with_members(tmp_path, 1, FF_MODEL_URI="a.safetensors")
    pools.sync({KEY: service(1, FF_MODEL_URI="b.safetensors")})
    pools.tick()
    await asyncio.sleep(0)
    assert pool.starting is None and len(supervisor.started) == 1
    await pools.close()


async def test_a_request_waits_through_one_start_that_fails_but_not_two(tmp_path: Path) -> None:
    """A replica killed while it starts fails its start; the request waiting on it waits for
    the next one. A second failure is answered."""
    supervisor = FakeSupervisor(tmp_path)
    failures = [HydrationError("exited before it was ready")]
    started = supervisor.start

    async def flaky(spec: RuntimeSpec, timeout: float) -> Replica:
        if failures:
            raise failures.pop()
        return await started(spec, timeout)

    supervisor.start = flaky  # type: ignore[method-assign]
    pools = Pools(supervisor, GatewayMetrics(lambda: []), hydrate_timeout=5)  # type: ignore[arg-type]
    pools.sync({KEY: service(min_scale=0)})
    pool = pools.get(KEY)
    assert pool is not None
    member = await asyncio.wait_for(pools.wait(pool), 10)
    assert member.replica is supervisor.started[0] and pool.backoff.failures == 1
    pool.give_back(member)
    await pools.lost(pool, member, refused=True)  # it dies, and every start from now fails
    failures += [HydrationError("bad weights"), HydrationError("bad weights")]
    with pytest.raises(HydrationError, match="bad weights"):
        await asyncio.wait_for(pools.wait(pool), 10)
    await pools.close()


async def test_a_request_waiting_on_a_variant_that_leaves_is_told_to_route_again(
    tmp_path: Path,
) -> None:
    supervisor = FakeSupervisor(tmp_path)
    supervisor.release.clear()  # its start hangs
    pools = Pools(supervisor, GatewayMetrics(lambda: []), hydrate_timeout=5)  # type: ignore[arg-type]
    pools.sync({KEY: service(min_scale=0)})
    pool = pools.get(KEY)
    assert pool is not None
    waiting = asyncio.ensure_future(pools.wait(pool))
    await _until(lambda: pool.starting is not None)
    pools.sync({})  # the rollout rolled back: its Service is gone
    with pytest.raises(RemovedError):
        await asyncio.wait_for(waiting, 5)
    await pools.close()
