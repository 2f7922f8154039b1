"""What the gate metrics tests share: a runtime-shaped replica serving its latency histogram
over real HTTP, and the traffic whose window every source must read the same way."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from redis import Redis

from forestflow_control_plane.policies.gates import Metrics
from forestflow_control_plane.rollouts.gate_metrics import ScrapeSource

CONTRACT, VERSION = "fraud/scoring", "v2"
EMPTY = Metrics(0.0, 0.0, 0)


class Replica:
    """A runtime's latency histogram (name, labels and buckets of forestflow_runtime.metrics)
    in a real prometheus_client registry, served at /metrics on 127.0.0.1. `restart` starts
    the counters again from zero, as a restarted runtime on the same port would."""

    def __init__(self) -> None:
        self.restart()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def restart(self) -> None:
        self.registry = CollectorRegistry()
        self._histogram = Histogram(
            "forestflow_request_duration_seconds",
            "Inference request latency as seen by the server",
            ("model", "contract", "variant", "protocol", "code"),
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

    def series(self, code: str, version: str = VERSION) -> Any:
        """Create the series (at zero) now, as a runtime does on its first such answer."""
        return self._histogram.labels("m", CONTRACT, version, "v2", code)

    def answer(self, count: int, seconds: float, code: str = "200", version: str = VERSION) -> None:
        child = self.series(code, version)
        for _ in range(count):
            child.observe(seconds)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler(replica: Replica) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = generate_latest(replica.registry)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def scraping(redis: Redis, *replicas: Replica) -> ScrapeSource:
    urls = [r.url for r in replicas]
    return ScrapeSource(redis, lambda contract, version: list(urls))


def mixed_traffic(replica: Replica) -> None:
    """100 answers: 80 fast, 20 slow of which 10 failed. p95: rank 95 falls 15/20 of the way
    into the (0.05, 0.1] bucket, so 50 + 50 * 15/20 = 87.5 ms."""
    replica.answer(80, 0.003)
    replica.answer(10, 0.07)
    replica.answer(10, 0.07, code="503")


MIXED = Metrics(87.5, 0.1, 100)
