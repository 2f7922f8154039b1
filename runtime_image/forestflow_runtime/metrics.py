"""Prometheus metrics of one runtime, in its own registry so servers in one process never mix.

Every series carries model, contract and variant; label children are bound once and cached so
the hot path does a dict lookup and an observe, nothing more.
"""

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_BASE = ("model", "contract", "variant")


class RuntimeMetrics:
    def __init__(self, model: str, contract: str, variant: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._base = (model, contract, variant)
        r = self.registry
        self._latency = Histogram(
            "forestflow_request_duration_seconds",
            "Inference request latency as seen by the server",
            (*_BASE, "protocol", "code"),
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self._latency_children: dict[tuple[str, int], Histogram] = {}
        self._queue = Gauge(
            "forestflow_queue_depth", "Requests waiting for a batch", _BASE, registry=r
        ).labels(*self._base)
        self._inflight = Gauge(
            "forestflow_inflight_requests",
            "Requests admitted and not yet answered (queued or running)",
            _BASE,
            registry=r,
        ).labels(*self._base)
        self._batch_size = Histogram(
            "forestflow_batch_size",
            "Rows per model call",
            _BASE,
            registry=r,
            buckets=_BATCH_BUCKETS,
        ).labels(*self._base)
        self._model_time = Histogram(
            "forestflow_model_duration_seconds",
            "Model time per batch",
            _BASE,
            registry=r,
            buckets=_LATENCY_BUCKETS,
        ).labels(*self._base)
        self._swaps = Counter(
            "forestflow_swaps", "Hot swaps attempted", (*_BASE, "result"), registry=r
        )
        self._swap_time = Histogram(
            "forestflow_swap_duration_seconds",
            "Load + warm-up + flip time of hot swaps",
            _BASE,
            registry=r,
            buckets=_LATENCY_BUCKETS,
        ).labels(*self._base)
        self._load_time = Gauge(
            "forestflow_model_load_seconds",
            "Load + warm-up time of the model now serving",
            _BASE,
            registry=r,
        ).labels(*self._base)
        self._rejected = Counter(
            "forestflow_rejected_requests",
            "Requests refused with 503 (queue full)",
            _BASE,
            registry=r,
        ).labels(*self._base)
        self._deadline = Counter(
            "forestflow_deadline_exceeded",
            "Requests answered 504 (deadline passed)",
            _BASE,
            registry=r,
        ).labels(*self._base)
        self._payload_drops = Counter(
            "forestflow_payload_events_dropped",
            "Payload events not delivered to Redis",
            _BASE,
            registry=r,
        ).labels(*self._base)

    def request(self, protocol: str, code: int, seconds: float) -> None:
        child = self._latency_children.get((protocol, code))
        if child is None:
            child = self._latency.labels(*self._base, protocol, str(code))
            self._latency_children[(protocol, code)] = child
        child.observe(seconds)

    def watch_load(self, queue_depth: Callable[[], int], inflight: Callable[[], int]) -> None:
        """Both gauges are read at scrape time, so the hot path never touches them."""
        self._queue.set_function(queue_depth)
        self._inflight.set_function(inflight)

    def batch_done(self, rows: int, model_seconds: float) -> None:
        self._batch_size.observe(rows)
        self._model_time.observe(model_seconds)

    def swap(self, ok: bool, seconds: float) -> None:
        self._swaps.labels(*self._base, "ok" if ok else "failed").inc()
        if ok:
            self._swap_time.observe(seconds)

    def model_loaded(self, seconds: float) -> None:
        self._load_time.set(seconds)

    def rejected(self) -> None:
        self._rejected.inc()

    def deadline_exceeded(self) -> None:
        self._deadline.inc()

    def payload_dropped(self, count: int = 1) -> None:
        self._payload_drops.inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
