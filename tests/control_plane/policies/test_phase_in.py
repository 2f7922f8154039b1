from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from forestflow_control_plane.policies import phase_in
from forestflow_control_plane.policies.gates import SLO, Gate, GateResult
from forestflow_control_plane.policies.phase_in import (
    Canary,
    Immediate,
    Linear,
    Plan,
    RolloutFinishedError,
    RolloutProgress,
    RolloutStatus,
    StepResult,
)

RUNNING, PAUSED = RolloutStatus.RUNNING, RolloutStatus.PAUSED
SUCCEEDED, ROLLED_BACK, ABORTED = (
    RolloutStatus.SUCCEEDED, RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED
)
PREVIOUS = {"v1": 70, "v2": 30}
AT_5 = {"v1": 67, "v2": 28, "v3": 5}
AT_25 = {"v1": 53, "v2": 22, "v3": 25}
AT_100 = {"v1": 0, "v2": 0, "v3": 100}
GATE = Gate(SLO(p95_latency_ms=100.0), recheck_seconds=15.0)
CANARY = Canary((5, 25, 50, 100), hold_seconds=60.0)
GATED = replace(CANARY, gate=GATE)
PASS = GateResult(True, "within SLO")
FAIL = GateResult(False, "p95_latency_ms 300 ms over SLO 100 ms")
UNDECIDED = GateResult(None, "undecided: 3 candidate requests, need 100")
BASE = RolloutProgress("v3", PREVIOUS, step=0, started_at=0.0, step_started_at=0.0)


def at(**changes: Any) -> RolloutProgress:
    return replace(BASE, **changes)


def schedule(plan: Plan) -> list[int]:
    return [plan.percent(i) for i in range(plan.last_step() + 1)]


PLANS: list[tuple[str, Plan, list[int]]] = [
    ("immediate", Immediate(), [100]),
    ("canary", CANARY, [5, 25, 50, 100]),
    ("linear even", Linear(100.0, 25.0), [25, 50, 75, 100]),
    ("linear rounds up", Linear(60.0, 20.0), [34, 67, 100]),
    ("linear partial last interval", Linear(50.0, 20.0), [34, 67, 100]),
    ("linear one step", Linear(10.0, 10.0), [100]),
]


@pytest.mark.parametrize(("name", "plan", "want"), PLANS, ids=[p[0] for p in PLANS])
def test_schedule(name: str, plan: Plan, want: list[int]) -> None:
    assert schedule(plan) == want


BAD_PLANS: list[tuple[str, Any, str]] = [
    ("no steps", lambda: Canary((), 1.0), "steps: must end at 100"),
    ("not ending at 100", lambda: Canary((5, 50), 1.0), "steps: must end at 100"),
    ("zero step", lambda: Canary((0, 100), 1.0), "steps: each must be in 1..100"),
    ("decreasing", lambda: Canary((50, 25, 100), 1.0), "steps: must increase"),
    ("repeated", lambda: Canary((50, 50, 100), 1.0), "steps: must increase"),
    ("negative hold", lambda: Canary((100,), -1.0), "hold_seconds: must be >= 0"),
    ("zero interval", lambda: Linear(10.0, 0.0), "interval_seconds: must be > 0"),
    ("interval over duration", lambda: Linear(10.0, 20.0), "and <= duration_seconds"),
]


@pytest.mark.parametrize(("name", "build", "want"), BAD_PLANS, ids=[b[0] for b in BAD_PLANS])
def test_plans_refuse(name: str, build: Any, want: str) -> None:
    with pytest.raises(ValueError, match=want):
        build()


STEPS: list[tuple[str, Plan, RolloutProgress, float, GateResult | None, StepResult]] = [
    ("holds until the hold is over", CANARY, BASE, 30.0, None,
     StepResult(BASE, AT_5, 60.0)),
    ("holds to the last moment", CANARY, BASE, 59.9, None,
     StepResult(BASE, AT_5, 60.0)),
    ("advances once the hold is over", CANARY, BASE, 60.0, None,
     StepResult(at(step=1, step_started_at=60.0), AT_25, 120.0)),
    ("advances one step however late", CANARY, BASE, 1000.0, None,
     StepResult(at(step=1, step_started_at=1000.0), AT_25, 1060.0)),
    ("ungated plan ignores a failing gate", CANARY, BASE, 60.0, FAIL,
     StepResult(at(step=1, step_started_at=60.0), AT_25, 120.0)),
    ("gate passes: advances", GATED, BASE, 60.0, PASS,
     StepResult(at(step=1, step_started_at=60.0), AT_25, 120.0)),
    ("gate passes before the hold: waits, rechecking during it", GATED, BASE, 10.0, PASS,
     StepResult(BASE, AT_5, 25.0)),
    ("gate passes near the hold's end: waits for the end", GATED, BASE, 50.0, PASS,
     StepResult(BASE, AT_5, 60.0)),
    ("gate undecided: holds, rechecks", GATED, BASE, 60.0, UNDECIDED,
     StepResult(BASE, AT_5, 75.0)),
    ("no gate result for a gated plan: holds", GATED, BASE, 60.0, None,
     StepResult(BASE, AT_5, 75.0)),
    ("gate fails mid-hold: rolls back", GATED, BASE, 10.0, FAIL,
     StepResult(at(status=ROLLED_BACK, reason=FAIL.reason), PREVIOUS, None)),
    ("gate fails on the last step: rolls back", GATED, at(step=3), 600.0, FAIL,
     StepResult(at(step=3, status=ROLLED_BACK, reason=FAIL.reason), PREVIOUS, None)),
    ("last step held: succeeds", CANARY, at(step=3), 60.0, None,
     StepResult(at(step=3, status=SUCCEEDED, reason="all steps held"), AT_100, None)),
    ("last step gated: succeeds with the gate's reason", GATED, at(step=3), 60.0, PASS,
     StepResult(at(step=3, status=SUCCEEDED, reason="within SLO"), AT_100, None)),
    ("paused does not move", GATED, at(status=PAUSED), 600.0, FAIL,
     StepResult(at(status=PAUSED), AT_5, None)),
    ("rolled back stays rolled back", CANARY, at(status=ROLLED_BACK), 600.0, PASS,
     StepResult(at(status=ROLLED_BACK), PREVIOUS, None)),
    ("shortened plan carries on from its last step", Canary((50, 100), 60.0), at(step=3),
     60.0, None,
     StepResult(at(step=3, status=SUCCEEDED, reason="all steps held"), AT_100, None)),
]


@pytest.mark.parametrize(
    ("name", "plan", "progress", "now", "gate", "want"), STEPS, ids=[s[0] for s in STEPS]
)
def test_step(
    name: str,
    plan: Plan,
    progress: RolloutProgress,
    now: float,
    gate: GateResult | None,
    want: StepResult,
) -> None:
    assert phase_in.step(plan, progress, now, gate) == want


STARTS: list[tuple[str, Plan, dict[str, int], StepResult]] = [
    ("canary begins at its first step", CANARY, PREVIOUS, StepResult(BASE, AT_5, 60.0)),
    ("immediate succeeds at once", Immediate(), PREVIOUS,
     StepResult(at(status=SUCCEEDED, reason="all steps held"), AT_100, None)),
    ("gated immediate waits for its gate", Immediate(GATE), PREVIOUS,
     StepResult(BASE, AT_100, 15.0)),
    ("first deploy", CANARY, {}, StepResult(at(previous={}), {"v3": 100}, 60.0)),
]


@pytest.mark.parametrize(("name", "plan", "previous", "want"), STARTS, ids=[s[0] for s in STARTS])
def test_start(name: str, plan: Plan, previous: dict[str, int], want: StepResult) -> None:
    assert phase_in.start(plan, "v3", previous, 0.0) == want


def test_start_refuses_a_malformed_previous_split() -> None:
    with pytest.raises(ValueError, match="sum to 100, got 90"):
        phase_in.start(CANARY, "v3", {"v1": 90}, 0.0)


CONTROLS: list[tuple[str, Any, RolloutProgress, StepResult]] = [
    ("promote", phase_in.promote, at(step=1),
     StepResult(at(step=1, status=SUCCEEDED, reason="promoted"), AT_100, None)),
    ("promote paused", phase_in.promote, at(status=PAUSED),
     StepResult(at(status=SUCCEEDED, reason="promoted"), AT_100, None)),
    ("pause", phase_in.pause, at(step=1),
     StepResult(at(step=1, status=PAUSED, reason="paused"), AT_25, None)),
    ("rollback", phase_in.rollback, at(step=2),
     StepResult(at(step=2, status=ROLLED_BACK, reason="rollback"), PREVIOUS, None)),
    ("rollback paused", phase_in.rollback, at(status=PAUSED),
     StepResult(at(status=ROLLED_BACK, reason="rollback"), PREVIOUS, None)),
    ("abort", phase_in.abort, at(step=2),
     StepResult(at(step=2, status=ABORTED, reason="aborted"), PREVIOUS, None)),
]


@pytest.mark.parametrize(
    ("name", "control", "progress", "want"), CONTROLS, ids=[c[0] for c in CONTROLS]
)
def test_controls(name: str, control: Any, progress: RolloutProgress, want: StepResult) -> None:
    assert control(CANARY, progress) == want


def test_control_reason_is_recorded() -> None:
    got = phase_in.abort(CANARY, BASE, reason="operator: wrong artifact")
    assert got.progress.reason == "operator: wrong artifact"


RESUMES: list[tuple[str, RolloutProgress, StepResult]] = [
    ("paused restarts its hold", at(step=1, status=PAUSED),
     StepResult(at(step=1, step_started_at=500.0, reason="resumed"), AT_25, 560.0)),
    ("running is left alone", at(step=1, step_started_at=450.0),
     StepResult(at(step=1, step_started_at=450.0), AT_25, 510.0)),
]


@pytest.mark.parametrize(("name", "progress", "want"), RESUMES, ids=[r[0] for r in RESUMES])
def test_resume(name: str, progress: RolloutProgress, want: StepResult) -> None:
    assert phase_in.resume(CANARY, progress, 500.0) == want


@pytest.mark.parametrize("status", [SUCCEEDED, ROLLED_BACK, ABORTED])
@pytest.mark.parametrize(
    "control",
    [phase_in.promote, phase_in.pause, phase_in.rollback, phase_in.abort,
     lambda plan, progress: phase_in.resume(plan, progress, 0.0)],
)
def test_controls_refuse_a_finished_rollout(status: RolloutStatus, control: Any) -> None:
    with pytest.raises(RolloutFinishedError, match=f"rollout of v3 already {status.value}"):
        control(CANARY, at(status=status))


def test_progress_round_trips_through_a_dict() -> None:
    progress = at(step=2, status=PAUSED, reason="x")
    assert RolloutProgress.from_dict(progress.to_dict()) == progress



