"""The request latency histogram reads exactly like a prometheus_client Histogram."""

import re

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from forestflow_runtime.metrics import _LATENCY_BUCKETS, RuntimeMetrics

OBSERVED = [  # (protocol, code, seconds): bucket edges, +Inf, several series
    ("plain", 200, 0.0005),
    ("plain", 200, 0.001),
    ("plain", 200, 0.0010001),
    ("v2", 200, 2.5),
    ("v2", 504, 30.0),
    ("v2", 504, 31.0),
    ("v1", 499, 0.3),
]


def latency_lines(text: str) -> list[str]:
    """The histogram's lines, creation times masked (they differ by a few microseconds)."""
    lines = [line for line in text.splitlines() if "forestflow_request_duration_seconds" in line]
    return [re.sub(r"(_created\{.*\}) \S+$", r"\1 T", line) for line in lines]


def test_latency_exposition_matches_prometheus_client() -> None:
    ours = RuntimeMetrics("m", "c/x", "v1")
    registry = CollectorRegistry()
    reference = Histogram(
        "forestflow_request_duration_seconds",
        "Inference request latency as seen by the server",
        ("model", "contract", "variant", "protocol", "code"),
        registry=registry,
        buckets=_LATENCY_BUCKETS,
    )
    for protocol, code, seconds in OBSERVED:
        ours.request(protocol, code, seconds)
        reference.labels("m", "c/x", "v1", protocol, str(code)).observe(seconds)
    want = latency_lines(generate_latest(registry).decode())
    assert latency_lines(ours.render().decode()) == want
    assert len(want) > 3 * len(_LATENCY_BUCKETS)
