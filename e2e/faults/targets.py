"""The processes a fault kills, found by the PID files `ffctl up` and the gateway write.
The worker runs its jobs and RQ's scheduler in its own process: there is no work horse or
scheduler process of its own to kill."""

from __future__ import annotations

import os
import random
import signal

from tests.support import eventually

from ..conftest import LocalPlatform, running

TARGETS = ("api", "worker", "gateway", "mirror", "replica", "redis")


class NoTargetError(LookupError):
    """Nothing of that kind runs now (no replica is up, or it died on its own)."""


def pid_of(platform: LocalPlatform, target: str, rng: random.Random) -> int:
    if target != "replica":
        return int((platform.home / "pids" / f"{target}.pid").read_text().split()[0])
    pids = sorted(p for p in platform.runtime_pids() if running(p))
    if not pids:
        raise NoTargetError("no runtime replica runs")
    return rng.choice(pids)


def kill(platform: LocalPlatform, target: str, rng: random.Random) -> int:
    """SIGKILL the target, alone; return its PID once it is gone."""
    pid = pid_of(platform, target, rng)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        raise NoTargetError(f"{target} ({pid}) had died already") from None
    eventually(lambda: not running(pid), 10.0, f"{target} ({pid}) to die")
    return pid
