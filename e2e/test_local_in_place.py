"""In-place rollouts on the local platform, as a user runs them: `ffctl deploy --wait` of the
same version with new weights while clients keep calling; nobody sees an error, and the
answers switch to the new weights. A shadow deploy takes no traffic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support import eventually

from .conftest import LocalPlatform
from .load import Tally, load, until_answered
from .test_local_slice import outputs, predict


def with_weights(model_yaml: Path, seed: int) -> Path:
    """The same version with weights built from another seed, deployed in place."""
    weights = model_yaml.parent / f"mlp-{seed}.safetensors"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
        "from build import build; build(Path(sys.argv[2]), int(sys.argv[3]))"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(model_yaml.parent), str(weights), str(seed)],
        check=True,
    )
    spec = yaml.safe_load(model_yaml.read_text())
    spec["variant"]["model"]["uri"] = weights.name
    spec["rollout"] = {"strategy": "in_place"}
    target = model_yaml.with_name(f"in-place-{seed}.yaml")
    target.write_text(yaml.safe_dump(spec))
    return target


async def deploy_under_load(
    platform: LocalPlatform, model_yaml: Path
) -> tuple[subprocess.CompletedProcess[str], Tally]:
    async with load(platform) as tally:
        await until_answered(tally, 10)  # clients are calling before the deploy starts
        deployed = await asyncio.to_thread(platform.ffctl, "deploy", str(model_yaml), "--wait")
        await until_answered(tally, 10)  # and go on after it
    return deployed, tally


def test_in_place_swap_under_load_loses_nothing(
    local_platform: LocalPlatform, example: Path
) -> None:
    local_platform.up()
    first = local_platform.ffctl("deploy", str(example), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    new_weights = with_weights(example, 7)  # built before the clients start: it takes seconds
    before = predict(local_platform)
    assert before.status_code == 200
    (runtime,) = local_platform.runtime_pids()

    deployed, tally = asyncio.run(deploy_under_load(local_platform, new_weights))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    print(tally.summary("(e) hot swap of weights under load"))
    assert tally.failures == []
    answers = tally.answers
    seen = {tuple(outputs(r)) for r in answers}
    after = predict(local_platform)
    assert outputs(after) != outputs(before)
    assert seen <= {tuple(outputs(before)), tuple(outputs(after))}
    assert tuple(outputs(answers[-1])) == tuple(outputs(after))
    assert local_platform.runtime_pids() == [runtime]  # swapped in place, not restarted

    # At zero replicas the new weights are tried on a short-lived runtime before the spec
    # changes: weights that cannot load never reach the next cold start.
    eventually(lambda: local_platform.runtime_pids() == [], what="the variant to dehydrate")
    broken = with_weights(example, 8)
    (broken.parent / "mlp-8.safetensors").write_bytes(b"not weights")
    refused = local_platform.ffctl("deploy", str(broken), "--wait")
    assert refused.returncode == 1
    assert "rolled_back" in refused.stderr and "did not start" in refused.stderr
    assert outputs(predict(local_platform)) == outputs(after)


def test_a_shadow_deploy_takes_no_traffic(local_platform: LocalPlatform, example: Path) -> None:
    local_platform.up()
    assert local_platform.ffctl("deploy", str(example), "--wait").returncode == 0
    spec = yaml.safe_load(example.read_text())
    spec["variant"]["version"] = "v2"
    spec["shadow"] = {"sample_rate": 0.5}
    shadow = example.with_name("shadow.yaml")
    shadow.write_text(yaml.safe_dump(spec))
    deployed = local_platform.ffctl("deploy", str(shadow), "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "runs as a shadow" in deployed.stdout
    answers = [predict(local_platform) for _ in range(20)]
    assert {r.headers["x-forestflow-variant"] for r in answers} == {"v1"}
