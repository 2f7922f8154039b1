"""Properties of rollouts over any previous split, any plan and any sequence of events."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import assume, given
from hypothesis import strategies as st

from forestflow_control_plane.policies import phase_in
from forestflow_control_plane.policies.gates import GateResult
from forestflow_control_plane.policies.phase_in import (
    Plan,
    RolloutFinishedError,
    RolloutStatus,
    StepResult,
)
from forestflow_control_plane.policies.split import check
from tests.control_plane.policies.inputs import plans, splits

PASS = GateResult(True, "within SLO")
FAIL = GateResult(False, "error_rate 0.5 over SLO 0.01")
UNDECIDED = GateResult(None, "undecided")
candidates = st.sampled_from(["v1", "new"])  # new, or already holding a share

Event = Callable[[Plan, StepResult, float], StepResult]


def stepped(gate: GateResult | None) -> Event:
    return lambda plan, last, now: phase_in.step(plan, last.progress, now, gate)


def controlled(control: Callable[[Plan, phase_in.RolloutProgress], StepResult]) -> Event:
    return lambda plan, last, now: control(plan, last.progress)


events = st.sampled_from(
    [stepped(g) for g in (None, PASS, FAIL, UNDECIDED)]
    + [controlled(c) for c in (phase_in.promote, phase_in.pause, phase_in.rollback,
                               phase_in.abort)]
    + [lambda plan, last, now: phase_in.resume(plan, last.progress, now)]
)


def ramp(plan: Plan, candidate: str, previous: dict[str, int]) -> list[StepResult]:
    """Every result of a rollout whose gate always passes, each step taken when asked."""
    results = [phase_in.start(plan, candidate, previous, 0.0)]
    while results[-1].next_at is not None:
        assert len(results) < 1000, "a passing ramp must end"
        results.append(phase_in.step(plan, results[-1].progress, results[-1].next_at, PASS))
    return results


@given(
    splits(), candidates, plans,
    st.lists(st.tuples(events, st.floats(0, 4000)), max_size=30),
)
def test_any_event_sequence_serves_a_valid_split(
    previous: dict[str, int],
    candidate: str,
    plan: Plan,
    timeline: list[tuple[Event, float]],
) -> None:
    result = phase_in.start(plan, candidate, previous, 0.0)
    now = 0.0
    for event, wait in timeline:
        now += wait
        try:
            result = event(plan, result, now)
        except RolloutFinishedError:
            assert result.progress.status in phase_in.FINISHED
        check(result.split)
        if result.progress.status in (RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED):
            assert result.split == previous
        else:
            assert set(result.split) == set(previous) | {candidate}


@given(splits(), candidates, plans)
def test_passing_ramp_never_lowers_the_candidate_and_ends_at_100(
    previous: dict[str, int], candidate: str, plan: Plan
) -> None:
    results = ramp(plan, candidate, previous)
    shares = [r.split[candidate] for r in results]
    assert shares == sorted(shares)
    assert shares[-1] == 100
    assert results[-1].progress.status == RolloutStatus.SUCCEEDED


@given(splits(), candidates, plans, st.integers(0, 1000), st.booleans(), st.floats(0, 4000))
def test_failure_at_any_step_restores_exactly_the_previous_split(
    previous: dict[str, int], candidate: str, plan: Plan, at: int, by_gate: bool, wait: float
) -> None:
    running = [
        r for r in ramp(plan, candidate, previous) if r.progress.status == RolloutStatus.RUNNING
    ]
    assume(running)  # an ungated Immediate plan is over before anything can fail
    before = running[at % len(running)].progress
    if by_gate and plan.gate is not None:
        got = phase_in.step(plan, before, before.step_started_at + wait, FAIL)
        assert got.progress.reason == FAIL.reason
    else:
        got = phase_in.rollback(plan, before)
    assert got.split == previous
    assert got.progress.status == RolloutStatus.ROLLED_BACK
    assert got.next_at is None
