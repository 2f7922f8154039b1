"""The gateway's own Prometheus metrics, served at GET /metrics from a registry of its own.

Every series carries the variant's `contract` (`namespace/name`) and `version`. A request
costs one counter and one histogram observation on label children bound when its variant
appeared (VariantMetrics); the gauges (in flight, replicas, traffic percent) are read from the
pools and the route table when Prometheus scrapes, so they cost a request nothing. The
Grafana dashboard reads these exact names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
LABELS = ("contract", "version")
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
HYDRATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


@dataclass(frozen=True)
class VariantGauges:
    """One variant's state at scrape time."""

    contract: str
    version: str
    inflight: int
    replicas: int
    traffic_percent: int


class _Gauges(Collector):
    def __init__(self, read: Callable[[], Iterable[VariantGauges]]) -> None:
        self._read = read

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        inflight, replicas, percent = self._families()
        for v in self._read():
            inflight.add_metric((v.contract, v.version), v.inflight)
            replicas.add_metric((v.contract, v.version), v.replicas)
            percent.add_metric((v.contract, v.version), v.traffic_percent)
        yield from (inflight, replicas, percent)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "forestflow_gateway_inflight",
                "Requests in the gateway for the variant: forwarded or waiting for a replica",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "forestflow_gateway_replicas", "Ready replicas taking traffic", labels=LABELS
            ),
            GaugeMetricFamily(
                "forestflow_gateway_traffic_percent",
                "The variant's share of its contract's Route",
                labels=LABELS,
            ),
        )


class GatewayMetrics:
    def __init__(self, gauges: Callable[[], Iterable[VariantGauges]]) -> None:
        """`gauges` reads every variant's current state; it runs on each scrape."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "forestflow_gateway_requests", "Requests the gateway answered, by status code",
            (*LABELS, "code"), registry=r,
        )
        self._duration = Histogram(
            "forestflow_gateway_request_duration_seconds",
            "Time from the request's arrival to its answer, hydration wait included",
            LABELS, buckets=REQUEST_BUCKETS, registry=r,
        )
        self._hydrations = Counter(
            "forestflow_gateway_hydrations", "Starts of a variant from zero ready replicas",
            (*LABELS, "outcome"), registry=r,
        )
        self._hydration_seconds = Histogram(
            "forestflow_gateway_hydration_seconds",
            "Time from zero to a ready replica (or to the failed start)",
            LABELS, buckets=HYDRATION_BUCKETS, registry=r,
        )
        self._restarts = Counter(
            "forestflow_gateway_restarts",
            "Starts made after a replica died unasked or a start failed",
            LABELS, registry=r,
        )
        r.register(_Gauges(gauges))
        self._variants: dict[tuple[str, str], VariantMetrics] = {}

    def variant(self, contract: str, version: str) -> VariantMetrics:
        """The variant's bound series, made on first use."""
        key = (contract, version)
        found = self._variants.get(key)
        if found is None:
            found = self._variants[key] = VariantMetrics(self, contract, version)
        return found

    def forget(self, contract: str, version: str) -> None:
        """Drop a removed variant's series, so that deploys do not pile them up."""
        variant = self._variants.pop((contract, version), None)
        if variant is None:
            return
        for code in variant.codes():
            self._requests.remove(contract, version, code)
        for outcome in ("success", "failure"):
            self._hydrations.remove(contract, version, outcome)
        for metric in (self._duration, self._hydration_seconds, self._restarts):
            metric.remove(contract, version)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class VariantMetrics:
    """A variant's label children, bound once; a request's cost is a dict lookup and two
    updates."""

    __slots__ = (
        "_duration", "_failed", "_hydrated", "_hydration_seconds", "_parent", "_requests",
        "_restarts", "labels",
    )

    def __init__(self, parent: GatewayMetrics, contract: str, version: str) -> None:
        self._parent = parent
        self.labels = (contract, version)
        self._duration = parent._duration.labels(contract, version)
        self._hydrated = parent._hydrations.labels(contract, version, "success")
        self._failed = parent._hydrations.labels(contract, version, "failure")
        self._hydration_seconds = parent._hydration_seconds.labels(contract, version)
        self._restarts = parent._restarts.labels(contract, version)
        self._requests: dict[int, Counter] = {}

    def answered(self, status: int, seconds: float) -> None:
        counter = self._requests.get(status)
        if counter is None:
            counter = self._requests[status] = self._parent._requests.labels(
                *self.labels, str(status)
            )
        counter.inc()
        self._duration.observe(seconds)

    def hydrated(self, ok: bool, seconds: float) -> None:
        (self._hydrated if ok else self._failed).inc()
        self._hydration_seconds.observe(seconds)

    def restarted(self) -> None:
        self._restarts.inc()

    def codes(self) -> list[str]:
        return [str(code) for code in self._requests]
