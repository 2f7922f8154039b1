"""`ffctl deploy --wait` on a real RQ worker: its exit code says how the rollout ended (0
succeeded, 1 failed its gate / rolled back), and its progress degrades to plain lines when
stdout is a pipe. The gate's verdict is driven through the Store, as the worker writes it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
from redis import Redis

from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.state.records import (
    ContractSnapshot,
    GateVerdict,
    RolloutStatus,
    VariantState,
)
from forestflow_control_plane.state.store import Store
from tests.support import eventually

from .conftest import ADMIN, CONTRACT, Ffctl, deploy, model_spec, roll_out, write_model

Worker = Callable[[], subprocess.Popen[bytes]]
GATED = {
    "phase_in": {"policy": "canary", "steps": [50, 100], "hold_seconds": 3600},
    "gate": {"min_requests": 20, "recheck_seconds": 3600},
}
REASON = "p95_latency_ms 80 ms over SLO 50 ms"


def test_a_rollout_that_succeeds_exits_0_with_its_url(
    admin: Ffctl, start_worker: Worker, tmp_path: Path
) -> None:
    start_worker()
    done = admin("deploy", str(write_model(tmp_path, model_spec(tmp_path))), "--wait")
    assert done.exit_code == 0, done.output
    assert "rollout of v1: succeeded, step 1/1 at 100%; traffic: v1 100%" in done.stdout
    assert "/contracts/examples/mlp/v1/mlp/predict" in done.stdout
    assert any(line.startswith("curl -s -X POST") for line in done.stdout.splitlines())


def running(contract: ContractSnapshot) -> bool:
    record = contract.contract.rollout
    return record is not None and record.candidate == "v2"


def gate_fails(before: ContractSnapshot | None) -> ContractSnapshot:
    """What the worker writes when the gate fails: rolled back, the verdict recorded."""
    assert before is not None
    record = before.contract.rollout
    assert record is not None
    progress = replace(record.progress, status=RolloutStatus.ROLLED_BACK, reason=REASON)
    rollout = replace(record, progress=progress, next_at=None,
                      gate=GateVerdict(False, REASON, time.time()))
    contract = replace(before.contract, traffic={"v1": 100}, rollout=rollout)
    v2 = replace(before.variants["v2"], state=VariantState.FAILED, reason=REASON)
    return replace(before.with_variant(v2), contract=contract)


def test_a_rollout_that_fails_its_gate_exits_1_and_prints_plain_lines_into_a_pipe(
    api_url: str, api: httpx.Client, redis: Redis, ffctl: Ffctl, start_worker: Worker,
    tmp_path: Path,
) -> None:
    deploy(api, model_spec(tmp_path, "v1"))
    roll_out(redis, "v1")
    start_worker()
    env = {k: v for k, v in {**os.environ, **ffctl.env}.items() if v is not None}
    env.update(FF_SERVER=api_url, FF_TOKEN=ADMIN)
    model = write_model(tmp_path, model_spec(tmp_path, "v2", **GATED))
    follower = subprocess.Popen(
        [sys.executable, "-m", "forestflow_cli", "deploy", str(model), "--wait"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert follower.stdout is not None and follower.stderr is not None
    lines = iter(follower.stdout.readline, "")
    assert next(lines).startswith("deployed examples/mlp@v2")
    first = next(lines)  # the worker has run the first step: the candidate at 50 %
    assert first.startswith("rollout of v2: running, step 1/2 at 50%; traffic: ")
    assert "v1 50%" in first and "v2 50%" in first and "gate not judged yet" in first
    Store(redis).update(CONTRACT, gate_fails, who="rollout", what="gate failed")
    rest = "".join(lines)
    assert follower.wait(timeout=30) == 1
    assert f"rolled_back, step 1/2 at 0%; traffic: v1 100%; gate failed: {REASON}" in rest
    assert f"rollout rolled_back: {REASON}" in follower.stderr.read()
    assert not any(line.startswith("curl") for line in rest.splitlines())


def test_until_percent_returns_once_the_share_was_held_and_promote_finishes(
    admin: Ffctl, api: httpx.Client, redis: Redis, start_worker: Worker, tmp_path: Path
) -> None:
    deploy(api, model_spec(tmp_path, "v1"))
    roll_out(redis, "v1")
    start_worker()
    canary = {"phase_in": {"policy": "canary", "steps": [25, 50, 100], "hold_seconds": 3600}}
    model = write_model(tmp_path, model_spec(tmp_path, "v2", **canary))
    store = Store(redis)
    later = Rollouts(store, LocalPlatform(redis, "runtime:test"), lambda call: None,
                     clock=lambda: time.time() + 3601)

    def hold_is_over() -> None:
        """The first step's hold ends (a clock an hour on): the canary moves to 50 %."""
        eventually(lambda: running(store.get(CONTRACT)), what="the first step")
        record = store.get(CONTRACT).contract.rollout
        assert record is not None
        later.advance(CONTRACT, "v2", record.token)

    stepper = threading.Thread(target=hold_is_over)
    stepper.start()
    done = admin("deploy", str(model), "--wait", "--until-percent", "25")
    stepper.join()
    assert done.exit_code == 0, done.output
    assert "rollout of v2: running, step 2/3 at 50%" in done.stdout
    assert admin("traffic", CONTRACT).stdout == "v1 50%, v2 50%\n"
    promoted = admin("promote", CONTRACT)
    assert promoted.exit_code == 0, promoted.output
    assert "rollout of v2 succeeded" in promoted.stdout
    assert api.get(f"/v1/contracts/{CONTRACT}/traffic").json()["traffic"] == {"v1": 0, "v2": 100}


def test_a_rollout_still_running_at_the_deadline_exits_1(
    admin: Ffctl, api: httpx.Client, redis: Redis, start_worker: Worker, tmp_path: Path
) -> None:
    deploy(api, model_spec(tmp_path, "v1"))
    roll_out(redis, "v1")
    start_worker()
    model = write_model(tmp_path, model_spec(tmp_path, "v2", **GATED))
    done = admin("deploy", str(model), "--wait", "--timeout", "5")
    assert done.exit_code == 1, done.output
    assert "rollout timed out" in done.stderr
