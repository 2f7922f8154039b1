"""How a new variant takes its share of a contract's traffic.

A plan is a schedule of candidate percents, each held for a while; a rollout's progress
is where it stands in that schedule. `step` is pure (the time is an argument), in the
style of Knative's traffic/rollout.go: the rollout job loads the progress, steps it,
applies the split and schedules itself for `next_at`. Replaying a step with the same
inputs gives the same result, so a retried job is harmless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from forestflow_control_plane.policies.gates import Gate, GateResult
from forestflow_control_plane.policies.split import shift
from forestflow_control_plane.state.records import (
    FINISHED,
    RolloutProgress,
    RolloutStatus,
)


@dataclass(frozen=True)
class Immediate:
    """100 % at once; with a gate, the rollout stays revocable until the gate passes."""

    gate: Gate | None = None

    def percent(self, step: int) -> int:
        return 100

    def last_step(self) -> int:
        return 0

    def hold(self) -> float:
        return 0.0


@dataclass(frozen=True)
class Canary:
    """Fixed steps, e.g. (5, 25, 50, 100), each held `hold_seconds`."""

    steps: tuple[int, ...]
    hold_seconds: float
    gate: Gate | None = None

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != 100:
            raise ValueError(f"steps: must end at 100, got {self.steps}")
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError(f"steps: each must be in 1..100, got {self.steps}")
        if any(a >= b for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"steps: must increase, got {self.steps}")
        if self.hold_seconds < 0:
            raise ValueError(f"hold_seconds: must be >= 0, got {self.hold_seconds}")

    def percent(self, step: int) -> int:
        return self.steps[step]

    def last_step(self) -> int:
        return len(self.steps) - 1

    def hold(self) -> float:
        return self.hold_seconds


@dataclass(frozen=True)
class Linear:
    """An even ramp to 100 % over `duration_seconds`, one step per `interval_seconds`.

    Step k of n = ceil(duration / interval) gives ceil(100 k / n) %, so the first step is
    never 0 % and the last is 100 %. Beyond 100 steps some percents repeat, which keeps
    the duration the user asked for.
    """

    duration_seconds: float
    interval_seconds: float
    gate: Gate | None = None

    def __post_init__(self) -> None:
        if not 0 < self.interval_seconds <= self.duration_seconds:
            raise ValueError(
                "interval_seconds: must be > 0 and <= duration_seconds, got"
                f" {self.interval_seconds} and {self.duration_seconds}"
            )

    def percent(self, step: int) -> int:
        return -(-100 * (step + 1) // (self.last_step() + 1))  # ceil, in integers

    def last_step(self) -> int:
        return math.ceil(self.duration_seconds / self.interval_seconds) - 1

    def hold(self) -> float:
        return self.interval_seconds


Plan = Immediate | Canary | Linear


# How soon a step that waits for the platform to serve its split looks again.
SETTLE_RECHECK_S = 2.0


@dataclass(frozen=True)
class Settled:
    """What the platform says of the rollout: `served`, the split its ingress serves now
    (None where whatever is applied is served at once), and `failure`, why the candidate
    will never serve (its revision failed)."""

    served: dict[str, int] | None = None
    failure: str | None = None

    def took(self, split: dict[str, int]) -> bool:
        return self.served is None or self.served == _live(split)

    def waiting(self, split: dict[str, int]) -> str:
        """Why a step holds for the platform, as `ffctl get rollout` shows it."""
        return f"waiting for the platform to serve {_shown(_live(split))}; it serves " \
            f"{_shown(self.served or {})}"


def _live(split: dict[str, int]) -> dict[str, int]:
    return {v: p for v, p in split.items() if p > 0}


def _shown(split: dict[str, int]) -> str:
    return ", ".join(f"{v} {p} %" for v, p in sorted(split.items())) or "nothing"


@dataclass(frozen=True)
class StepResult:
    """The new progress, the split to apply now, and when to step again (None: never)."""

    progress: RolloutProgress
    split: dict[str, int]
    next_at: float | None


class RolloutFinishedError(ValueError):
    """A control (pause, promote, ...) on a rollout that has already finished."""


def split_of(plan: Plan, progress: RolloutProgress) -> dict[str, int]:
    """The traffic split that `progress` stands for."""
    if progress.status in (RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED):
        return dict(progress.previous)
    if progress.status == RolloutStatus.SUCCEEDED:
        return shift(progress.previous, progress.candidate, 100)
    # min(): a plan shortened mid-rollout (a redeploy) carries on from its new last step.
    percent = plan.percent(min(progress.step, plan.last_step()))
    return shift(progress.previous, progress.candidate, percent)


def start(
    plan: Plan, candidate: str, previous: dict[str, int], now: float,
    settled: Settled | None = None,
) -> StepResult:
    """Begin at the plan's first step; an ungated Immediate plan succeeds right away where
    the platform serves what it is given at once, else once it serves it."""
    progress = RolloutProgress(candidate, dict(previous), 0, now, now)
    return step(plan, progress, now, None, settled)


def step(
    plan: Plan, progress: RolloutProgress, now: float, gate: GateResult | None,
    settled: Settled | None = None,
) -> StepResult:
    """Advance one step if the hold is over, (for a gated plan) the gate passed and the
    platform serves the current step's split.

    A failing gate rolls back at once, even mid-hold: a bad candidate should not wait out
    its hold; so does a candidate the platform says will never serve. An undecided gate
    (or none given to a gated plan) holds and asks to be called again after the gate's
    `recheck_seconds`. An ungated plan ignores `gate`. A step the platform does not serve
    yet holds too, saying so in its reason and looking again after SETTLE_RECHECK_S: no
    step starts before the one before it took. A step that starts clears the reason.
    Paused and finished rollouts do not move. After the last step (100 %) has been held,
    gated and served like any other, the rollout succeeds.
    """
    if progress.status != RolloutStatus.RUNNING:
        return _result(plan, progress, None)
    if settled is not None and settled.failure is not None:
        return _finish(plan, progress, RolloutStatus.ROLLED_BACK, settled.failure)
    verdict = gate if plan.gate is not None else None
    if verdict is not None and verdict.passed is False:
        return _finish(plan, progress, RolloutStatus.ROLLED_BACK, verdict.reason)
    due = progress.step_started_at + plan.hold()
    if now < due:
        # A gated step is checked through its hold, so a bad candidate fails early.
        recheck = due if plan.gate is None else min(due, now + plan.gate.recheck_seconds)
        return _result(plan, progress, recheck)
    if plan.gate is not None and (verdict is None or verdict.passed is None):
        return _result(plan, progress, now + plan.gate.recheck_seconds)
    split = split_of(plan, progress)
    if settled is not None and not settled.took(split):
        waiting = replace(progress, reason=settled.waiting(split))
        return _result(plan, waiting, now + SETTLE_RECHECK_S)
    if progress.step >= plan.last_step():
        reason = verdict.reason if verdict is not None else "all steps held"
        return _finish(plan, progress, RolloutStatus.SUCCEEDED, reason)
    advanced = replace(progress, step=progress.step + 1, step_started_at=now, reason="")
    return _result(plan, advanced, now + plan.hold())


def promote(plan: Plan, progress: RolloutProgress, reason: str = "") -> StepResult:
    """Skip the remaining steps: the candidate serves 100 % and the rollout succeeds."""
    return _finish(plan, _unfinished(progress), RolloutStatus.SUCCEEDED, reason or "promoted")


def pause(plan: Plan, progress: RolloutProgress, reason: str = "") -> StepResult:
    """Freeze the split where it is until `resume`."""
    paused = replace(
        _unfinished(progress), status=RolloutStatus.PAUSED, reason=reason or "paused"
    )
    return _result(plan, paused, None)


def resume(plan: Plan, progress: RolloutProgress, now: float, reason: str = "") -> StepResult:
    """Carry on from the same step; its hold starts again, so the gate sees fresh metrics.

    Resuming a running rollout changes nothing (a retried resume must not restart a hold).
    """
    if _unfinished(progress).status == RolloutStatus.RUNNING:
        return _result(plan, progress, progress.step_started_at + plan.hold())
    running = replace(
        progress,
        status=RolloutStatus.RUNNING,
        step_started_at=now,
        reason=reason or "resumed",
    )
    return _result(plan, running, now + plan.hold())


def rollback(plan: Plan, progress: RolloutProgress, reason: str = "") -> StepResult:
    """Give every version exactly its share from before the rollout."""
    return _finish(plan, _unfinished(progress), RolloutStatus.ROLLED_BACK, reason or "rollback")


def abort(plan: Plan, progress: RolloutProgress, reason: str = "") -> StepResult:
    """Like rollback (the previous split, exactly), recorded as abandoned rather than failed."""
    return _finish(plan, _unfinished(progress), RolloutStatus.ABORTED, reason or "aborted")


def _unfinished(progress: RolloutProgress) -> RolloutProgress:
    if progress.status in FINISHED:
        raise RolloutFinishedError(
            f"rollout of {progress.candidate} already {progress.status.value}"
        )
    return progress


def _finish(
    plan: Plan, progress: RolloutProgress, status: RolloutStatus, reason: str
) -> StepResult:
    return _result(plan, replace(progress, status=status, reason=reason), None)


def _result(plan: Plan, progress: RolloutProgress, next_at: float | None) -> StepResult:
    return StepResult(progress, split_of(plan, progress), next_at)
