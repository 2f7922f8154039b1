"""Prometheus metrics of one runtime, in its own registry so servers in one process never mix.

Every series carries model, contract and variant; label children are bound once and cached so
the hot path does a dict lookup and an observe, nothing more. The one metric observed on every
request, the latency histogram, is plain counters read at scrape time (RequestLatency).
"""

import itertools
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_BASE = ("model", "contract", "variant")
_LATENCY = "forestflow_request_duration_seconds"
_LATENCY_HELP = "Inference request latency as seen by the server"
STREAM_OUTCOMES = ("consumed", "succeeded", "failed", "dead_lettered")


class _Series:
    __slots__ = ("counts", "created", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)  # per bucket, the last one is +Inf
        self.total = 0.0
        self.created = time.time()


class RequestLatency:
    """The request latency histogram, exposed exactly as a prometheus_client Histogram would
    be (buckets, count, sum, created), without its two locks and Python bucket walk per
    observation: it is observed and collected only on the event loop's thread."""

    def __init__(self, base: tuple[str, str, str]) -> None:
        self._base = base
        self._series: dict[tuple[str, int], _Series] = {}
        self._bounds = [float(b) for b in _LATENCY_BUCKETS]
        self._les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]

    def observe(self, protocol: str, code: int, seconds: float) -> None:
        series = self._series.get((protocol, code))
        if series is None:
            series = self._series[(protocol, code)] = _Series()
        series.counts[bisect_left(self._bounds, seconds)] += 1
        series.total += seconds

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(_LATENCY, _LATENCY_HELP, labels=(*_BASE, "protocol", "code"))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        names = (*_BASE, "protocol", "code")
        family = HistogramMetricFamily(_LATENCY, _LATENCY_HELP, labels=names)
        for (protocol, code), series in self._series.items():
            values = (*self._base, protocol, str(code))
            cumulative = itertools.accumulate(series.counts)
            family.add_metric(values, list(zip(self._les, cumulative, strict=True)), series.total)
            family.add_sample(
                f"{_LATENCY}_created", dict(zip(names, values, strict=True)), series.created
            )
        yield family


class RuntimeMetrics:
    def __init__(self, model: str, contract: str, variant: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._base = (model, contract, variant)
        r = self.registry
        self._latency = RequestLatency(self._base)
        r.register(self._latency)
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
        stream_messages = Counter(
            "forestflow_stream_messages",
            "Stream messages: consumed (read or reclaimed), succeeded, failed (per delivery), "
            "dead_lettered",
            (*_BASE, "outcome"),
            registry=r,
        )
        self._stream_messages = {o: stream_messages.labels(*self._base, o) for o in STREAM_OUTCOMES}
        self._stream_errors = Counter(
            "forestflow_stream_errors",
            "Failures of the stream consumer's Redis calls (it retries with backoff)",
            _BASE,
            registry=r,
        ).labels(*self._base)
        self._stream_lag = Gauge(
            "forestflow_stream_lag",
            "Input stream entries not yet read by the consumer group",
            _BASE,
            registry=r,
        ).labels(*self._base)
        self._stream_pending = Gauge(
            "forestflow_stream_pending",
            "Input stream entries read by the consumer group and not yet acknowledged",
            _BASE,
            registry=r,
        ).labels(*self._base)

    def request(self, protocol: str, code: int, seconds: float) -> None:
        self._latency.observe(protocol, code, seconds)

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

    def stream_message(self, outcome: str) -> None:
        """outcome is one of STREAM_OUTCOMES."""
        self._stream_messages[outcome].inc()

    def stream_error(self) -> None:
        self._stream_errors.inc()

    def stream_backlog(self, lag: int | None, pending: int) -> None:
        """lag is None where Redis (< 7) does not report it."""
        if lag is not None:
            self._stream_lag.set(lag)
        self._stream_pending.set(pending)

    def render(self) -> bytes:
        return generate_latest(self.registry)
