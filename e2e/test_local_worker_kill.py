"""Scenario (f): the RQ worker is SIGKILLed in the middle of a canary, while clients call.
`ffctl up` restarts only what died; the new worker resumes the rollout where it was, and
the clients never notice."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import yaml

from tests.support import eventually

from .conftest import LocalPlatform, running
from .load import Tally, load, until_answered
from .test_local_in_place import with_weights


def canary(model_yaml: Path) -> Path:
    spec = yaml.safe_load(with_weights(model_yaml, 7).read_text())
    spec["variant"]["version"] = "v2"
    spec["rollout"] = {"phase_in": {"policy": "canary", "steps": [50, 100], "hold_seconds": 4}}
    target = model_yaml.with_name("v2.yaml")
    target.write_text(yaml.safe_dump(spec))
    return target


def worker_pid(platform: LocalPlatform) -> int:
    return int((platform.home / "pids" / "worker.pid").read_text().split()[0])


def traffic(platform: LocalPlatform) -> str:
    return platform.ffctl("traffic", "examples/mlp").stdout.strip()


def resumed(platform: LocalPlatform) -> bool:
    return traffic(platform).startswith("v2 100%")


async def kill_worker_mid_rollout(platform: LocalPlatform, model_yaml: Path) -> tuple[int, Tally]:
    async with load(platform) as tally:
        await until_answered(tally, 10)
        deployed = await asyncio.to_thread(platform.ffctl, "deploy", str(model_yaml))
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        await asyncio.to_thread(
            eventually, lambda: "v2 50%" in traffic(platform), 60.0, "the canary's first step"
        )
        killed = worker_pid(platform)
        os.killpg(killed, signal.SIGKILL)  # the worker and any work horse it forked
        await asyncio.to_thread(eventually, lambda: not running(killed), 10.0, "the kill")
        assert "v2 50%" in traffic(platform)  # nothing moved without a worker
        repaired = await asyncio.to_thread(
            platform.ffctl, "up", "--api-port", str(platform.api_port),
            "--gateway-port", str(platform.gateway_port),
        )
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        await asyncio.to_thread(eventually, lambda: resumed(platform), 60.0, "the rollout to go on")
        await until_answered(tally, 10)
    return killed, tally


def test_a_killed_worker_mid_rollout_resumes_and_no_request_fails(
    local_platform: LocalPlatform, example: Path
) -> None:
    local_platform.up()
    assert local_platform.ffctl("deploy", str(example), "--wait").returncode == 0
    gateway = int((local_platform.home / "pids" / "gateway.pid").read_text().split()[0])

    killed, tally = asyncio.run(kill_worker_mid_rollout(local_platform, canary(example)))
    print(tally.summary("(f) worker SIGKILLed mid-rollout"))
    assert tally.failures == []
    assert set(tally.served()) == {"v1", "v2"}
    assert worker_pid(local_platform) != killed and running(worker_pid(local_platform))
    assert running(gateway)  # only the dead worker was restarted
