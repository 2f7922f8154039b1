"""The shadow mirror's Prometheus metrics, on a registry of its own (Grafana's shadow panel
reads these names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from forestflow_control_plane.shadows.results import Outcome

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MirrorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        pair = ["contract", "shadow"]
        self.compared = Counter(
            "forestflow_shadow_compared", "Rows (predictions) compared with the primary's",
            pair, registry=self.registry,
        )
        self.agreed = Counter(
            "forestflow_shadow_agreed", "Rows where the shadow picked the primary's class",
            pair, registry=self.registry,
        )
        self.max_abs_diff = Gauge(
            "forestflow_shadow_max_abs_diff",
            "Largest absolute output difference seen since this mirror started",
            pair, registry=self.registry,
        )
        self.errors = Counter(
            "forestflow_shadow_errors",
            "Replays that failed or whose answer could not be compared",
            pair, registry=self.registry,
        )
        self.latency = Histogram(
            "forestflow_shadow_latency_seconds",
            "Latency of mirrored requests: the primary's (as it served them) and the shadow's",
            ["contract", "variant"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._max: dict[tuple[str, str], float] = {}

    def observe(self, outcomes: list[Outcome]) -> None:
        """Count the outcomes of one primary request, recorded once."""
        for outcome in outcomes:
            pair = (outcome.contract, outcome.shadow)
            if outcome.shadow_latency_ms is not None:
                self.latency.labels(outcome.contract, outcome.shadow).observe(
                    outcome.shadow_latency_ms / 1000
                )
            if outcome.agreement is None:
                self.errors.labels(*pair).inc()
                continue
            self.compared.labels(*pair).inc(outcome.agreement.rows)
            self.agreed.labels(*pair).inc(outcome.agreement.agreed)
            self._max[pair] = max(self._max.get(pair, 0.0), outcome.agreement.max_abs_diff)
            self.max_abs_diff.labels(*pair).set(self._max[pair])
        if outcomes:
            first = outcomes[0]
            self.latency.labels(first.contract, first.primary).observe(
                first.primary_latency_ms / 1000
            )
