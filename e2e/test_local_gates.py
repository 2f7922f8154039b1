"""A gated canary on the local platform, on real parts end to end: the RQ worker's gate reads
the runtimes' own /metrics, a slow candidate fails its SLO, the rollout rolls back on its
own, `ffctl deploy --wait` exits non-zero with the reason, and no client request fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from .conftest import LocalPlatform
from .load import Tally, load, until_answered

SLOW_MODEL = '''
import time

from model import MLP


class SlowMLP(MLP):
    """The example MLP, 80 ms slower per batch: a regression a gate must catch."""

    def forward(self, x):
        time.sleep(0.08)
        return super().forward(x)
'''


def gated_slow_version(model_yaml: Path) -> Path:
    (model_yaml.parent / "slow.py").write_text(SLOW_MODEL)
    spec = yaml.safe_load(model_yaml.read_text())
    spec["variant"]["version"] = "v2"
    spec["variant"]["model"]["class"] = "slow:SlowMLP"
    spec["rollout"] = {
        "phase_in": {"policy": "canary", "steps": [50, 100], "hold_seconds": 60},
        "gate": {"min_requests": 20, "recheck_seconds": 1},
    }
    spec["slo"] = {"p95_latency_ms": 50}
    target = model_yaml.with_name("v2-slow.yaml")
    target.write_text(yaml.safe_dump(spec))
    return target


async def deploy_under_load(platform: LocalPlatform, model_yaml: Path) -> tuple[int, str, Tally]:
    async with load(platform) as tally:
        await until_answered(tally, 10)
        deployed = await asyncio.to_thread(platform.ffctl, "deploy", str(model_yaml), "--wait")
        await until_answered(tally, 10)  # clients go on after the rollback
    return deployed.returncode, deployed.stdout + deployed.stderr, tally


def test_a_slow_canary_fails_its_gate_and_rolls_back_without_a_failed_request(
    local_platform: LocalPlatform, example: Path
) -> None:
    local_platform.up()
    assert local_platform.ffctl("deploy", str(example), "--wait").returncode == 0

    code, printed, tally = asyncio.run(
        deploy_under_load(local_platform, gated_slow_version(example))
    )
    assert code == 1, printed
    assert "traffic: v1 50%, v2 50%" in printed or "traffic: v2 50%, v1 50%" in printed
    assert "rollout rolled_back" in printed and "over SLO 50 ms" in printed
    print(tally.summary("(b) slow canary rolled back"))
    assert tally.failures == [] and tally.total > 20
    answers = tally.answers
    served = {r.headers["x-forestflow-variant"] for r in answers}
    assert served == {"v1", "v2"}  # the canary did take traffic before the gate failed
    assert answers[-1].headers["x-forestflow-variant"] == "v1"

    traffic = local_platform.ffctl("traffic", "examples/mlp")
    assert traffic.returncode == 0, traffic.stderr
    assert traffic.stdout.strip() == "v1 100%"
