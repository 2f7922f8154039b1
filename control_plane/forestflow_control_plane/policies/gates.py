"""Metric gates: may a rollout take its next step, must it roll back, or is it too early?

A gate compares the candidate's metrics over the current step with the contract's SLO and
with the incumbent's metrics over the same window. The caller gathers the metrics (from
Prometheus); this module only judges them, so the verdict is reproducible from its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SLO:
    """Absolute limits for a contract; None means that metric has no limit."""

    p95_latency_ms: float | None = None
    error_rate: float | None = None


@dataclass(frozen=True)
class Metrics:
    """One variant's measurements over a window (error_rate is a fraction, 0..1)."""

    p95_latency_ms: float
    error_rate: float
    requests: int

    def __post_init__(self) -> None:
        # NaN compares false against every limit and would pass any gate: refuse it here.
        if math.isnan(self.p95_latency_ms) or self.p95_latency_ms < 0:
            raise ValueError(f"p95_latency_ms: must be a number >= 0, got {self.p95_latency_ms}")
        if math.isnan(self.error_rate) or not 0 <= self.error_rate <= 1:
            raise ValueError(f"error_rate: must be a fraction in 0..1, got {self.error_rate}")
        if self.requests < 0:
            raise ValueError(f"requests: must be >= 0, got {self.requests}")


@dataclass(frozen=True)
class GateResult:
    """passed: True (go on), False (roll back) or None (undecided: hold, do nothing)."""

    passed: bool | None
    reason: str


@dataclass(frozen=True)
class Gate:
    """A rollout plan's gate settings; `recheck_seconds` is how long to wait when undecided."""

    slo: SLO
    margin: float = 0.2
    min_requests: int = 100
    recheck_seconds: float = 30.0

    def evaluate(self, candidate: Metrics, incumbent: Metrics | None) -> GateResult:
        return evaluate(self.slo, candidate, incumbent, self.margin, self.min_requests)


def evaluate(
    slo: SLO,
    candidate: Metrics,
    incumbent: Metrics | None,
    margin: float,
    min_requests: int,
) -> GateResult:
    """Judge the candidate against the SLO and against the incumbent, within `margin`.

    Rules, in order:
    - fewer than `min_requests` candidate requests: undecided (too little evidence either way);
    - a metric over its SLO limit fails;
    - a metric worse than the incumbent's by more than `margin` (0.2 = 20 % worse) fails;
      this comparison is skipped when there is no incumbent or it too has fewer than
      `min_requests` requests (its numbers would be noise). An incumbent with no errors
      makes any candidate error a failure: the margin is relative.
    Every failing metric is named in the reason with both numbers.
    """
    if margin < 0:
        raise ValueError(f"margin: must be >= 0, got {margin}")
    if candidate.requests < min_requests:
        return GateResult(
            None, f"undecided: {candidate.requests} candidate requests, need {min_requests}"
        )
    compare = incumbent is not None and incumbent.requests >= min_requests
    failures: list[str] = []
    for metric, unit, limit in (
        ("p95_latency_ms", " ms", slo.p95_latency_ms),
        ("error_rate", "", slo.error_rate),
    ):
        value: float = getattr(candidate, metric)
        if limit is not None and value > limit:
            failures.append(f"{metric} {value:g}{unit} over SLO {limit:g}{unit}")
        if compare:
            baseline: float = getattr(incumbent, metric)
            allowed = baseline * (1 + margin)
            if value > allowed:
                failures.append(
                    f"{metric} {value:g}{unit} over incumbent {baseline:g}{unit}"
                    f" + {margin:.0%} = {allowed:g}{unit}"
                )
    if failures:
        return GateResult(False, "; ".join(failures))
    against = "SLO and incumbent" if compare else "SLO (no incumbent to compare)"
    return GateResult(
        True,
        f"within {against}: p95_latency_ms {candidate.p95_latency_ms:g} ms,"
        f" error_rate {candidate.error_rate:g} over {candidate.requests} requests",
    )
