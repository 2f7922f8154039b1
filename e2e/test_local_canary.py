"""Scenario (a): v1 serves; v2 goes out as a gated canary under client load, passes its gate
at every step, reaches 100 %, and v1 expires (its runtime stops); no client request fails."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import yaml

from forestflow_control_plane.api.auth import admin_token
from tests.support import eventually

from .conftest import LocalPlatform, running
from .load import Tally, load, until_answered
from .test_local_in_place import with_weights


def gated_canary(model_yaml: Path, version: str, seed: int) -> Path:
    """A new version with other weights (same speed), rolled out 50 % then 100 %, each step
    gated; the versions it replaces expire once it serves alone."""
    spec = yaml.safe_load(with_weights(model_yaml, seed).read_text())
    spec["variant"]["version"] = version
    spec["rollout"] = {
        "phase_in": {"policy": "canary", "steps": [50, 100], "hold_seconds": 3},
        # The gate runs at every step, on the runtimes' real metrics, but no latency limit
        # that a loaded machine could cross decides it: the SLO bounds errors only, and the
        # margin is the schema's widest (101 times the incumbent's p95, measured beside it).
        # Failing on latency is scenario (b)'s, with a candidate slower by construction.
        "gate": {"min_requests": 20, "recheck_seconds": 1, "margin": 100},
    }
    spec["slo"] = {"error_rate": 0.01}
    spec["expiry"] = {"on_replacement": True}
    target = model_yaml.with_name(f"{version}.yaml")
    target.write_text(yaml.safe_dump(spec))
    return target


def variant_state(platform: LocalPlatform, version: str) -> str:
    token = admin_token(platform.home / "tokens.yaml")
    answer = httpx.get(
        f"http://127.0.0.1:{platform.api_port}/v1/contracts/examples/mlp/variants/{version}",
        headers={"Authorization": f"Bearer {token}"},
    )
    answer.raise_for_status()
    return str(answer.json()["state"])


def runtimes_of(platform: LocalPlatform, version: str) -> list[int]:
    files = platform.home.glob(f"pids/runtimes/examples_ff-mlp-{version}-*.pid")
    return [int(f.read_text()) for f in files]


async def deploy_under_load(
    platform: LocalPlatform, model_yaml: Path
) -> tuple[subprocess.CompletedProcess[str], Tally]:
    async with load(platform) as tally:
        await until_answered(tally, 10)
        deployed = await asyncio.to_thread(platform.ffctl, "deploy", str(model_yaml), "--wait")
        await until_answered(tally, 10)
    return deployed, tally


def test_a_good_canary_reaches_100_percent_and_the_old_version_expires(
    local_platform: LocalPlatform, example: Path
) -> None:
    local_platform.up()
    assert local_platform.ffctl("deploy", str(example), "--wait").returncode == 0

    deployed, tally = asyncio.run(deploy_under_load(local_platform, gated_canary(example, "v2", 7)))
    print(tally.summary("(a) gated canary to 100 %"))
    printed = deployed.stdout + deployed.stderr
    assert deployed.returncode == 0, printed
    assert "v2 50%" in printed and "v2 100%" in printed
    assert tally.failures == []
    assert set(tally.served()) == {"v1", "v2"}
    assert tally.answers[-1].headers["x-forestflow-variant"] == "v2"

    assert local_platform.ffctl("traffic", "examples/mlp").stdout.strip() == "v2 100%"
    assert variant_state(local_platform, "v1") == "expired"
    assert variant_state(local_platform, "v2") == "serving"
    old = runtimes_of(local_platform, "v1")
    eventually(
        lambda: runtimes_of(local_platform, "v1") == [] and not any(map(running, old)),
        what="the expired v1's runtime to stop",
    )
