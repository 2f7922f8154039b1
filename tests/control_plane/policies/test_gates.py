from __future__ import annotations

import math

import pytest

from forestflow_control_plane.policies.gates import SLO, Gate, GateResult, Metrics, evaluate

SLO_BOTH = SLO(p95_latency_ms=100.0, error_rate=0.01)
GOOD = Metrics(p95_latency_ms=50.0, error_rate=0.001, requests=500)
INCUMBENT = Metrics(p95_latency_ms=50.0, error_rate=0.002, requests=5000)

ROWS: list[tuple[str, SLO, Metrics, Metrics | None, GateResult]] = [
    ("too few requests: undecided", SLO_BOTH,
     Metrics(500.0, 0.9, requests=99), INCUMBENT,
     GateResult(None, "undecided: 99 candidate requests, need 100")),
    ("within SLO and margin", SLO_BOTH, GOOD, INCUMBENT,
     GateResult(True, "within SLO and incumbent: p95_latency_ms 50 ms, error_rate 0.001"
                      " over 500 requests")),
    ("no incumbent: SLO only", SLO_BOTH, Metrics(99.0, 0.0, 100), None,
     GateResult(True, "within SLO (no incumbent to compare): p95_latency_ms 99 ms,"
                      " error_rate 0 over 100 requests")),
    ("quiet incumbent is not compared", SLO_BOTH, Metrics(99.0, 0.0, 100),
     Metrics(1.0, 0.0, 3),
     GateResult(True, "within SLO (no incumbent to compare): p95_latency_ms 99 ms,"
                      " error_rate 0 over 100 requests")),
    ("latency over SLO", SLO_BOTH, Metrics(120.0, 0.001, 500), None,
     GateResult(False, "p95_latency_ms 120 ms over SLO 100 ms")),
    ("error rate over SLO", SLO_BOTH, Metrics(50.0, 0.05, 500), None,
     GateResult(False, "error_rate 0.05 over SLO 0.01")),
    ("latency at margin edge passes", SLO(), Metrics(60.0, 0.002, 500), INCUMBENT,
     GateResult(True, "within SLO and incumbent: p95_latency_ms 60 ms, error_rate 0.002"
                      " over 500 requests")),
    ("latency past margin", SLO(), Metrics(61.0, 0.002, 500), INCUMBENT,
     GateResult(False, "p95_latency_ms 61 ms over incumbent 50 ms + 20% = 60 ms")),
    ("both metrics named", SLO_BOTH, Metrics(130.0, 0.02, 500), INCUMBENT,
     GateResult(False, "p95_latency_ms 130 ms over SLO 100 ms;"
                       " p95_latency_ms 130 ms over incumbent 50 ms + 20% = 60 ms;"
                       " error_rate 0.02 over SLO 0.01;"
                       " error_rate 0.02 over incumbent 0.002 + 20% = 0.0024")),
    ("incumbent without errors: any error fails", SLO(), Metrics(50.0, 0.001, 500),
     Metrics(50.0, 0.0, 500),
     GateResult(False, "error_rate 0.001 over incumbent 0 + 20% = 0")),
]


@pytest.mark.parametrize(
    ("name", "slo", "candidate", "incumbent", "want"), ROWS, ids=[r[0] for r in ROWS]
)
def test_evaluate(
    name: str, slo: SLO, candidate: Metrics, incumbent: Metrics | None, want: GateResult
) -> None:
    assert evaluate(slo, candidate, incumbent, margin=0.2, min_requests=100) == want


def test_gate_carries_its_settings() -> None:
    gate = Gate(SLO(p95_latency_ms=10.0), margin=0.5, min_requests=1000)
    assert gate.evaluate(GOOD, INCUMBENT).passed is None
    assert Gate(SLO(), margin=0.5, min_requests=10).evaluate(
        Metrics(74.0, 0.0, 10), INCUMBENT
    ) == GateResult(True, "within SLO and incumbent: p95_latency_ms 74 ms, error_rate 0"
                          " over 10 requests")


BAD_METRICS = [
    ("nan latency", (math.nan, 0.0, 1), "p95_latency_ms: must be a number >= 0, got nan"),
    ("negative latency", (-1.0, 0.0, 1), "p95_latency_ms: must be a number >= 0"),
    ("nan error rate", (1.0, math.nan, 1), "error_rate: must be a fraction in 0..1, got nan"),
    ("error rate over 1", (1.0, 1.5, 1), "error_rate: must be a fraction in 0..1"),
    ("negative requests", (1.0, 0.0, -1), "requests: must be >= 0"),
]


@pytest.mark.parametrize(("name", "args", "want"), BAD_METRICS, ids=[b[0] for b in BAD_METRICS])
def test_metrics_refuse_what_would_pass_any_gate(
    name: str, args: tuple[float, float, int], want: str
) -> None:
    with pytest.raises(ValueError, match=want):
        Metrics(*args)


def test_negative_margin_is_refused() -> None:
    with pytest.raises(ValueError, match="margin: must be >= 0"):
        evaluate(SLO(), GOOD, INCUMBENT, margin=-0.1, min_requests=1)
