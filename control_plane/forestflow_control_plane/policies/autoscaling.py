"""How many replicas a variant wants: Knative's concurrency autoscaler (KPA), simplified for
one machine. Pure functions over the Service's autoscaling annotations and the concurrency
the gateway observed; the pools act on the answer.

Enough replicas for the highest load seen in the stable window at `target` each (requests
in flight, or requests per second with metric `rps`), clamped to [min-scale, max-scale]: load
raises the count at once, and only a window without that load lowers it again, so a lull
between bursts does not flap replicas. Whether the last replica goes is the retention
period's call alone: one replica stays while the variant was used within it (min-scale
permitting zero). A new revision starts with initial-scale replicas. Knative's utilization
percentage and panic mode are left out: on one machine the target is the whole story.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from forestflow_control_plane.knative.annotations import (
    INITIAL_SCALE,
    MAX_SCALE,
    METRIC,
    MIN_SCALE,
    RETENTION,
    TARGET,
    WINDOW,
)
from forestflow_control_plane.knative.values import go_duration

# Knative's defaults, but for two: 60 s of extra runtimes is a lot of a laptop's memory, and
# 6 s (Knative's smallest window) still rides out the gaps between bursts; and a variant
# starts at zero, woken by its first request, as the local platform always has.
DEFAULTS = {
    METRIC: "concurrency", INITIAL_SCALE: "0", MIN_SCALE: "0", MAX_SCALE: "0",
    TARGET: "100", WINDOW: "6s", RETENTION: "60s",
}
METRICS = ("concurrency", "rps")


@dataclass(frozen=True)
class Autoscaling:
    """A Service's autoscaling annotations; `max_scale` None is Knative's max-scale 0: no
    bound."""

    min_scale: int = 0
    max_scale: int | None = None
    target: float = 100.0
    window_s: float = 6.0
    retention_s: float = 60.0
    metric: str = "concurrency"
    initial_scale: int = 0


@dataclass(frozen=True)
class Sample:
    """One tick ending `at`: the mean concurrency over it (requests in flight or waiting for
    a replica) and the requests per second that arrived."""

    at: float
    concurrency: float
    rps: float = 0.0


def desired_replicas(
    scaling: Autoscaling,
    samples: Sequence[Sample],
    last_active: float | None,
    now: float,
    new: bool = False,
) -> int:
    """Replicas wanted `now`, given the recent samples, when a request was last seen, and
    whether the revision is `new` (it has not yet had its initial-scale replicas)."""
    idle = last_active is None or now - last_active >= scaling.retention_s
    if idle:
        wanted = 0
    else:
        horizon = now - scaling.window_s
        rps = scaling.metric == "rps"
        peak = max(
            (s.rps if rps else s.concurrency for s in samples if s.at > horizon), default=0.0
        )
        wanted = max(1, math.ceil(peak / scaling.target - 1e-9))
    if new:
        wanted = max(wanted, scaling.initial_scale)
    if scaling.max_scale is not None:
        wanted = min(wanted, scaling.max_scale)
    return max(wanted, scaling.min_scale)


def autoscaling_of(service: dict[str, Any]) -> Autoscaling:
    """Read the annotations of a Service's revision template; a bad value raises ValueError
    naming the annotation."""
    annotations = {**DEFAULTS, **service["spec"]["template"]["metadata"].get("annotations", {})}
    min_scale = _count(annotations, MIN_SCALE)
    max_scale = _count(annotations, MAX_SCALE) or None
    if max_scale is not None and min_scale > max_scale:
        raise ValueError(f"{MIN_SCALE}: {min_scale} exceeds {MAX_SCALE} {max_scale}")
    target = _number(annotations, TARGET)
    if target <= 0:
        raise ValueError(f"{TARGET}: must be above zero, got {annotations[TARGET]!r}")
    if annotations[METRIC] not in METRICS:
        raise ValueError(f"{METRIC}: {annotations[METRIC]!r} is not one of {', '.join(METRICS)}")
    return Autoscaling(
        min_scale=min_scale,
        max_scale=max_scale,
        target=target,
        window_s=_seconds(annotations, WINDOW),
        retention_s=_seconds(annotations, RETENTION),
        metric=annotations[METRIC],
        initial_scale=_count(annotations, INITIAL_SCALE),
    )


def _count(annotations: dict[str, str], key: str) -> int:
    try:
        value = int(annotations[key])
    except ValueError:
        raise ValueError(f"{key}: not a whole number: {annotations[key]!r}") from None
    if value < 0:
        raise ValueError(f"{key}: must not be negative, got {value}")
    return value


def _number(annotations: dict[str, str], key: str) -> float:
    try:
        return float(annotations[key])
    except ValueError:
        raise ValueError(f"{key}: not a number: {annotations[key]!r}") from None


def _seconds(annotations: dict[str, str], key: str) -> float:
    seconds = go_duration(annotations[key])
    if seconds is None:
        raise ValueError(f"{key}: not a duration: {annotations[key]!r}")
    if seconds < 0:
        raise ValueError(f"{key}: must not be negative, got {annotations[key]!r}")
    return float(seconds)
