"""Reading a runtime's /metrics page and PromQL's histogram_quantile, the arithmetic every
gate metrics source shares; pure functions, no server."""

from __future__ import annotations

import math

import pytest

from forestflow_control_plane.rollouts.gate_metrics import histogram_quantile, parse_exposition
from forestflow_runtime.metrics import RuntimeMetrics

from .metrics_support import CONTRACT, VERSION

INF = math.inf


# -- histogram_quantile: PromQL's algorithm -------------------------------------------------

QUANTILES = [
    ("no observations", 0.95, [(0.1, 0), (INF, 0)], math.nan),
    ("no +Inf bucket", 0.95, [(0.1, 5), (1.0, 10)], math.nan),
    ("only +Inf", 0.95, [(INF, 10)], math.nan),
    ("lowest bucket starts at 0", 0.95, [(0.1, 10), (INF, 10)], 0.095),
    ("interpolated in a middle bucket", 0.95, [(0.005, 80), (0.05, 80), (0.1, 100), (INF, 100)],
     0.0875),
    ("rank on a bucket's upper bound", 0.5, [(1.0, 50), (2.0, 100), (INF, 100)], 1.0),
    ("rank in +Inf: highest finite bound", 0.95, [(0.1, 10), (1.0, 10), (INF, 100)], 1.0),
    ("unsorted, non-monotonic levelled", 0.95, [(INF, 10), (2.0, 9), (1.0, 10)], 0.95),
    ("duplicate bounds merged", 0.5, [(1.0, 2), (1.0, 2), (INF, 8)], 1.0),
    ("negative lowest bound", 0.1, [(-1.0, 5), (INF, 10)], -1.0),
    ("median of the runtime's buckets", 0.5,
     [(0.01, 0), (0.025, 40), (0.05, 100), (INF, 100)], 0.025 + 0.025 * 10 / 60),
]


@pytest.mark.parametrize(
    ("q", "buckets", "want"), [row[1:] for row in QUANTILES], ids=[row[0] for row in QUANTILES]
)
def test_histogram_quantile(q: float, buckets: list[tuple[float, float]], want: float) -> None:
    got = histogram_quantile(q, buckets)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(want)


def test_histogram_quantile_refuses_q_outside_0_1() -> None:
    with pytest.raises(ValueError, match=r"q: must be in 0\.\.1"):
        histogram_quantile(1.5, [(1.0, 1), (INF, 1)])


def test_parse_exposition_reads_the_runtime_s_own_metrics() -> None:
    runtime = RuntimeMetrics("mlp", CONTRACT, VERSION)
    runtime.request("v2", 200, 0.003)
    runtime.request("v1", 503, 0.07)
    runtime.request("plain", 504, 0.3)
    other = RuntimeMetrics("mlp", CONTRACT, "v1")
    other.request("v2", 500, 0.003)
    page = runtime.render().decode() + other.render().decode()
    got = parse_exposition(page, CONTRACT, VERSION)
    assert (got.count, got.errors) == (3, 2)
    assert got.buckets["0.005"] == 1 and got.buckets["0.1"] == 2 and got.buckets["inf"] == 3
    assert got.created > 0
