"""Which failed replica leaves a pool: one that refuses connections goes at once even while
its process lingers; one that only dropped a connection and lives on stays."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forestflow_control_plane.platforms.local.gateway_metrics import GatewayMetrics
from forestflow_control_plane.platforms.local.pools import Pool, Pools
from forestflow_control_plane.platforms.local.supervisor import Replica, RuntimeSpec
from forestflow_control_plane.resources import CONTRACT_LABEL, VERSION_LABEL

SERVICE: dict[str, Any] = {
    "metadata": {"labels": {CONTRACT_LABEL: "fraud.scoring", VERSION_LABEL: "v1"}},
    "spec": {"template": {
        "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": "1"}},
        "spec": {"containers": [{"env": []}]},
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

    async def start(self, spec: RuntimeSpec, timeout: float) -> Replica:
        n = len(self.started)
        replica = Replica(LingeringProcess(1000 + n), 40000 + n, self.tmp / f"{n}.pid")
        self.started.append(replica)
        return replica

    async def stop(self, replica: Replica, grace: float = 0.0) -> None:
        replica.process.send_signal(signal.SIGTERM)
        self.stopped.append(replica)


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)


def _ready(pool: Pool) -> Callable[[], bool]:
    return lambda: bool(pool.members) and pool.starting is None


async def _pool_with_one_member(tmp_path: Path) -> tuple[Pools, Pool, FakeSupervisor]:
    supervisor = FakeSupervisor(tmp_path)
    pools = Pools(supervisor, GatewayMetrics(lambda: []), hydrate_timeout=5)  # type: ignore[arg-type]
    pools.sync({"fraud-scoring-v1": SERVICE})
    pool = pools.get("fraud-scoring-v1")
    assert pool is not None
    await _until(_ready(pool))
    return pools, pool, supervisor


async def test_a_replica_that_refuses_leaves_at_once_and_is_replaced(tmp_path: Path) -> None:
    pools, pool, supervisor = await _pool_with_one_member(tmp_path)
    (member,) = pool.members
    await pools.lost(pool, member, refused=True)
    assert member not in pool.members
    await _until(lambda: bool(supervisor.stopped))
    assert supervisor.stopped == [member.replica]
    await _until(_ready(pool))  # min-scale 1 brings a new one
    assert [m.replica for m in pool.members] == [supervisor.started[1]]
    await pools.close()


async def test_a_replica_that_dropped_a_connection_and_lives_stays(tmp_path: Path) -> None:
    pools, pool, supervisor = await _pool_with_one_member(tmp_path)
    (member,) = pool.members
    await pools.lost(pool, member, refused=False)
    assert pool.members == [member]
    assert supervisor.stopped == []
    await pools.close()
