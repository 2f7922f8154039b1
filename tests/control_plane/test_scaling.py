"""The local platform's scaling and restart policies: pure functions, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from forestflow_control_plane.platforms.local.backoff import Backoff, restart_delay
from forestflow_control_plane.policies.autoscaling import (
    Autoscaling,
    Sample,
    autoscaling_of,
    desired_replicas,
)

SCALING = Autoscaling(min_scale=0, max_scale=3, target=2, window_s=5, retention_s=30)
NOW = 100.0

# (name, scaling, samples as (age in seconds, mean concurrency), seconds since last active, want)
DESIRED: list[tuple[str, Autoscaling, list[tuple[float, float]], float | None, int]] = [
    ("never used stays at zero", SCALING, [], None, 0),
    ("idle past retention goes to zero", SCALING, [(1, 0.0)], 30, 0),
    ("idle within retention keeps one", SCALING, [(1, 0.0)], 29, 1),
    ("load at target needs one", SCALING, [(0.2, 2.0)], 0, 1),
    ("load just above target needs two", SCALING, [(0.2, 2.1)], 0, 2),
    ("twice the target needs two, not three", SCALING, [(0.2, 4.0)], 0, 2),
    ("beyond max is clamped", SCALING, [(0.2, 50.0)], 0, 3),
    ("a peak in the window holds replicas", SCALING, [(4, 6.0), (0.2, 0.5)], 0, 3),
    ("a peak out of the window is forgotten", SCALING, [(5, 6.0), (0.2, 0.5)], 0, 1),
    ("min-scale keeps replicas when never used",
     Autoscaling(min_scale=2, max_scale=3, target=2, window_s=5, retention_s=30), [], None, 2),
    ("min-scale keeps replicas past retention",
     Autoscaling(min_scale=1, max_scale=3, target=2, window_s=5, retention_s=30), [], 99, 1),
    ("no max-scale is no bound",
     Autoscaling(min_scale=0, max_scale=None, target=1, window_s=5, retention_s=30),
     [(0.2, 40.0)], 0, 40),
]
RPS = Autoscaling(min_scale=0, max_scale=10, target=100, window_s=5, retention_s=30, metric="rps")
INITIAL = Autoscaling(min_scale=0, max_scale=3, target=2, window_s=5, retention_s=30,
                      initial_scale=2)
# (name, scaling, samples as (age, concurrency, rps), seconds since last active, new, want)
MORE: list[tuple[str, Autoscaling, list[tuple[float, float, float]], float | None, bool, int]] = [
    ("rps metric reads the arrival rate", RPS, [(0.2, 1.0, 450.0)], 0, False, 5),
    ("rps metric ignores concurrency", RPS, [(0.2, 50.0, 90.0)], 0, False, 1),
    ("a new revision starts with initial-scale", INITIAL, [], None, True, 2),
    ("initial-scale no longer counts once reached", INITIAL, [], None, False, 0),
]


@pytest.mark.parametrize(
    ("name", "scaling", "samples", "idle", "new", "want"), MORE, ids=[row[0] for row in MORE]
)
def test_desired_replicas_by_rps_and_initial_scale(
    name: str,
    scaling: Autoscaling,
    samples: list[tuple[float, float, float]],
    idle: float | None,
    new: bool,
    want: int,
) -> None:
    recorded = [Sample(NOW - age, concurrency, rps) for age, concurrency, rps in samples]
    last_active = None if idle is None else NOW - idle
    assert desired_replicas(scaling, recorded, last_active, NOW, new) == want


@pytest.mark.parametrize(
    ("name", "scaling", "samples", "idle", "want"), DESIRED, ids=[row[0] for row in DESIRED]
)
def test_desired_replicas(
    name: str,
    scaling: Autoscaling,
    samples: list[tuple[float, float]],
    idle: float | None,
    want: int,
) -> None:
    recorded = [Sample(NOW - age, concurrency) for age, concurrency in samples]
    last_active = None if idle is None else NOW - idle
    assert desired_replicas(scaling, recorded, last_active, NOW) == want


def test_desired_replicas_do_not_flap_between_bursts() -> None:
    """Bursts of 6 every 2 s, idle between them: three replicas throughout, not 3-1-3-1."""
    samples: list[Sample] = []
    wanted = []
    for tick in range(40):
        now = tick * 0.2
        samples.append(Sample(now, 6.0 if tick % 10 == 0 else 0.0))
        wanted.append(desired_replicas(SCALING, samples, now, now))
    assert set(wanted) == {3}


def service(**annotations: str) -> dict[str, Any]:
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


ANNOTATIONS = [
    ("knative defaults, local window", {}, Autoscaling(0, None, 100.0, 6.0, 60.0)),
    ("as resources.py writes them",
     {"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "4",
      "autoscaling.knative.dev/target": "8",
      "autoscaling.knative.dev/scale-to-zero-pod-retention-period": "1.5s"},
     Autoscaling(1, 4, 8.0, 6.0, 1.5)),
    ("window", {"autoscaling.knative.dev/window": "500ms"}, Autoscaling(0, None, 100.0, 0.5, 60.0)),
    ("rps and initial scale",
     {"autoscaling.knative.dev/metric": "rps", "autoscaling.knative.dev/initial-scale": "2"},
     Autoscaling(0, None, 100.0, 6.0, 60.0, metric="rps", initial_scale=2)),
]


@pytest.mark.parametrize(
    ("name", "annotations", "want"), ANNOTATIONS, ids=[row[0] for row in ANNOTATIONS]
)
def test_autoscaling_of(name: str, annotations: dict[str, str], want: Autoscaling) -> None:
    assert autoscaling_of(service(**annotations)) == want


BAD = [
    ("autoscaling.knative.dev/metric", "cpu"),
    ("autoscaling.knative.dev/min-scale", "two"),
    ("autoscaling.knative.dev/max-scale", "-1"),
    ("autoscaling.knative.dev/target", "0"),
    ("autoscaling.knative.dev/window", "soon"),
    ("autoscaling.knative.dev/scale-to-zero-pod-retention-period", "-5s"),
]


@pytest.mark.parametrize(("key", "value"), BAD, ids=[row[0].split("/")[1] for row in BAD])
def test_bad_annotations_name_the_annotation(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        autoscaling_of(service(**{key: value}))


def test_min_scale_above_max_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="min-scale: 3 exceeds"):
        autoscaling_of(service(**{
            "autoscaling.knative.dev/min-scale": "3", "autoscaling.knative.dev/max-scale": "2"
        }))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("1.5s", 1.5), ("500ms", 0.5), ("2m", 120.0), ("1m30s", 90.0)],
)
def test_durations_read_as_admission_reads_them(text: str, seconds: float) -> None:
    """One parser, Go's: what admission accepts, the local autoscaler reads the same."""
    scaling = autoscaling_of(service(**{
        "autoscaling.knative.dev/window": text,
        "autoscaling.knative.dev/scale-to-zero-pod-retention-period": text,
    }))
    assert (scaling.window_s, scaling.retention_s) == (seconds, seconds)


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 0.0), (2, 0.5), (3, 1.0), (4, 2.0), (8, 30.0), (50, 30.0)],
)
def test_restart_delay_doubles_from_half_a_second_to_thirty(failures: int, delay: float) -> None:
    assert restart_delay(failures) == delay


def test_backoff_grows_while_replicas_fail_and_resets_once_one_stays_up() -> None:
    backoff = Backoff()
    assert backoff.allows(0.0)
    backoff = backoff.failed(now=10.0)  # a replica died: the first restart at once
    assert (backoff.failures, backoff.allows(10.0)) == (1, True)
    backoff = backoff.failed(now=11.0)  # the restart failed to start
    assert backoff.failures == 2 and not backoff.allows(11.4) and backoff.allows(11.5)
    backoff = backoff.failed(now=12.0)
    assert backoff.failures == 3 and not backoff.allows(12.9) and backoff.allows(13.0)
    assert backoff.settled(uptime=9.9) == backoff  # not proven healthy yet
    assert backoff.settled(uptime=10.0) == Backoff()  # up for the reset period: a fresh count
