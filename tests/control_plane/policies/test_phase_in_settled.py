"""Steps and what the platform serves: no step starts before the one before it took, and a
candidate the platform says will never serve rolls back, gated or not."""

from __future__ import annotations

import pytest

from forestflow_control_plane.policies import phase_in
from forestflow_control_plane.policies.phase_in import (
    SETTLE_RECHECK_S,
    Immediate,
    Plan,
    RolloutProgress,
    Settled,
    StepResult,
)

from .test_phase_in import (
    AT_5,
    AT_25,
    AT_100,
    BASE,
    CANARY,
    GATED,
    PASS,
    PREVIOUS,
    ROLLED_BACK,
    SUCCEEDED,
    at,
)

SERVING_5 = Settled(served={"v1": 67, "v2": 28, "v3": 5})
STILL_PREVIOUS = Settled(served=dict(PREVIOUS))
WAITING_5 = (
    "waiting for the platform to serve v1 67 %, v2 28 %, v3 5 %; it serves v1 70 %, v2 30 %"
)
FAILED = Settled(served=dict(PREVIOUS), failure="revision ff-x-v3-abc failed: ProgressDeadline")

STEPS: list[tuple[str, Plan, RolloutProgress, float, Settled | None, StepResult]] = [
    ("served: the step advances", CANARY, BASE, 60.0, SERVING_5,
     StepResult(at(step=1, step_started_at=60.0), AT_25, 120.0)),
    ("not served yet: holds, says why, looks again soon", CANARY, BASE, 60.0, STILL_PREVIOUS,
     StepResult(at(reason=WAITING_5), AT_5, 60.0 + SETTLE_RECHECK_S)),
    ("a step that starts clears the reason", CANARY, at(reason=WAITING_5), 60.0, SERVING_5,
     StepResult(at(step=1, step_started_at=60.0), AT_25, 120.0)),
    ("not served mid-hold: the hold's own recheck", CANARY, BASE, 10.0, STILL_PREVIOUS,
     StepResult(BASE, AT_5, 60.0)),
    ("a platform that serves at once is no reason to wait", CANARY, BASE, 60.0, None,
     StepResult(at(step=1, step_started_at=60.0), AT_25, 120.0)),
    ("the last step succeeds only once served", CANARY, at(step=3), 60.0,
     Settled(served={"v1": 67, "v2": 28, "v3": 5}),
     StepResult(at(step=3, reason="waiting for the platform to serve v3 100 %; it serves "
                "v1 67 %, v2 28 %, v3 5 %"), AT_100, 60.0 + SETTLE_RECHECK_S)),
    ("the last step served: succeeds", CANARY, at(step=3), 60.0, Settled(served={"v3": 100}),
     StepResult(at(step=3, status=SUCCEEDED, reason="all steps held"), AT_100, None)),
    ("a failed candidate rolls back mid-hold, ungated", CANARY, BASE, 10.0, FAILED,
     StepResult(at(status=ROLLED_BACK, reason=FAILED.failure), PREVIOUS, None)),
    ("a failed candidate rolls back though its gate passed", GATED, BASE, 60.0, FAILED,
     StepResult(at(status=ROLLED_BACK, reason=FAILED.failure), PREVIOUS, None)),
]


@pytest.mark.parametrize(
    ("name", "plan", "progress", "now", "settled", "want"), STEPS, ids=[s[0] for s in STEPS]
)
def test_step(
    name: str, plan: Plan, progress: RolloutProgress, now: float, settled: Settled | None,
    want: StepResult,
) -> None:
    gate = PASS if plan.gate is not None else None
    assert phase_in.step(plan, progress, now, gate, settled) == want


def test_an_immediate_rollout_waits_for_a_platform_that_serves_later() -> None:
    assert phase_in.start(Immediate(), "v3", PREVIOUS, 0.0, STILL_PREVIOUS) == StepResult(
        at(reason="waiting for the platform to serve v3 100 %; it serves v1 70 %, v2 30 %"),
        AT_100, SETTLE_RECHECK_S,
    )
    assert phase_in.start(Immediate(), "v3", PREVIOUS, 0.0, None).progress.status is SUCCEEDED
