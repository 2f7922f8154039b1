"""A starting worker releases the RQ scheduler locks of its dead predecessors, and only
theirs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from redis import Redis
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE

from forestflow_control_plane.rollouts.worker import release_stale_scheduler_locks


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def hold(redis: Redis, queue: str, host: str, pid: int) -> None:
    """Write the lock and the scheduler's record as RQ's scheduler does."""
    name = f"{host}:{pid}:scheduler"
    redis.set(SCHEDULER_LOCKING_KEY_TEMPLATE % queue, name, ex=61)
    redis.hset(SCHEDULER_KEY_TEMPLATE % name, mapping={"hostname": host, "pid": pid})


@pytest.mark.parametrize(("host", "pid", "released"), [
    (socket.gethostname(), dead_pid(), True),  # died on this host
    (socket.gethostname(), os.getpid(), True),  # a predecessor with this PID (a container)
    (socket.gethostname(), os.getppid(), False),  # alive on this host
    ("elsewhere", dead_pid(), False),  # another host's: its liveness is unknown here
], ids=["dead", "same-pid", "alive", "other-host"])
def test_only_locks_of_dead_holders_on_this_host_are_released(
    redis: Redis, host: str, pid: int, released: bool
) -> None:
    hold(redis, "rollouts", host, pid)
    assert release_stale_scheduler_locks(redis, ["rollouts", "idle"]) == (
        ["rollouts"] if released else []
    )
    assert (redis.get(SCHEDULER_LOCKING_KEY_TEMPLATE % "rollouts") is None) is released
