"""The gates' metrics sources against real parts: runtime-shaped /metrics pages served over
real HTTP, real Redis for the scrape history, and a real Prometheus server scraping them."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.composition import Parts
from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.policies.gates import Metrics
from forestflow_control_plane.rollouts import gate_metrics as metrics
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.rollouts.gate_metrics import (
    MetricsUnavailableError,
    PrometheusSource,
    ScrapeSource,
    histogram_quantile,
    parse_exposition,
)
from forestflow_control_plane.settings import Settings, SettingsError
from forestflow_control_plane.spec.model_file import ModelFile, validate_model_file
from forestflow_control_plane.state.store import Store
from forestflow_runtime.metrics import RuntimeMetrics
from tests.control_plane.memory_platform import MemoryPlatform
from tests.support import REPO, eventually, free_port

CONTRACT, VERSION = "fraud/scoring", "v2"
EMPTY = Metrics(0.0, 0.0, 0)
INF = math.inf


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


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    """Two replicas of the variant; a test uses one or both."""
    started = [Replica(), Replica()]
    try:
        yield started
    finally:
        for replica in started:
            replica.close()


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


# -- ScrapeSource ---------------------------------------------------------------------------


def test_scrape_window_counts_only_what_happened_after_since(
    redis: Redis, replicas: list[Replica]
) -> None:
    replica = replicas[0]
    source = scraping(redis, replica)
    replica.answer(5, 0.003)
    # No scrape at or before `since`: the replica's counters since it started.
    assert source.window(CONTRACT, VERSION, 900, 1000).requests == 5
    replica.answer(10, 0.003)
    assert source.window(CONTRACT, VERSION, 1000, 1060).requests == 10
    assert source.window(CONTRACT, VERSION, 1060, 1090) == EMPTY
    assert source.window(CONTRACT, VERSION, 1000, 1090).requests == 10


def test_scrape_window_counts_errors_and_p95(redis: Redis, replicas: list[Replica]) -> None:
    replica = replicas[0]
    source = scraping(redis, replica)
    replica.answer(7, 2.0, code="500")  # before the window: must not count
    replica.answer(3, 0.003, version="v1")  # another variant: must not count
    before = source.window(CONTRACT, VERSION, 1000, 1000)
    assert (before.requests, before.error_rate) == (7, 1.0)
    assert before.p95_latency_ms == pytest.approx(1000 + 1500 * 0.95)  # in (1 s, 2.5 s]
    mixed_traffic(replica)
    got = source.window(CONTRACT, VERSION, 1000, 1060)
    assert got.requests == 100 and got.error_rate == 0.1
    assert got.p95_latency_ms == pytest.approx(87.5)


@pytest.mark.parametrize(
    ("before", "after"), [(50, 7), (3, 5)], ids=["counter went down", "counter passed the old"]
)
def test_scrape_window_counts_a_restarted_replica_from_zero(
    redis: Redis, replicas: list[Replica], before: int, after: int
) -> None:
    replica = replicas[0]
    source = scraping(redis, replica)
    replica.answer(before, 0.003)
    source.window(CONTRACT, VERSION, 1000, 1000)
    replica.answer(10, 0.003)
    source.window(CONTRACT, VERSION, 1000, 1030)
    replica.restart()
    replica.answer(after, 0.003)
    # 10 up to the restart (seen by the scrape at 1030), then `after` from zero.
    assert source.window(CONTRACT, VERSION, 1000, 1060).requests == 10 + after


def test_scrape_window_sums_replicas(redis: Redis, replicas: list[Replica]) -> None:
    first, second = replicas
    source = scraping(redis, first, second)
    first.answer(20, 0.003)
    source.window(CONTRACT, VERSION, 1000, 1000)
    first.answer(80, 0.003)
    second.answer(10, 0.07)
    second.answer(10, 0.07, code="503")
    got = source.window(CONTRACT, VERSION, 1000, 1060)
    assert got.requests == 100 and got.error_rate == 0.1
    assert got.p95_latency_ms == pytest.approx(MIXED.p95_latency_ms)


def test_scrape_window_keeps_what_a_gone_replica_answered(
    redis: Redis, replicas: list[Replica]
) -> None:
    first, second = replicas
    urls = [first.url, second.url]
    source = ScrapeSource(redis, lambda contract, version: list(urls))
    source.window(CONTRACT, VERSION, 1000, 1000)
    first.answer(5, 0.003)
    second.answer(5, 0.003)
    source.window(CONTRACT, VERSION, 1000, 1030)
    urls.remove(second.url)  # dehydrated: no longer listed
    first.answer(5, 0.003)
    assert source.window(CONTRACT, VERSION, 1000, 1060).requests == 15
    assert source.window(CONTRACT, VERSION, 1060, 1090) == EMPTY


def test_scrape_window_without_replicas_is_empty(redis: Redis) -> None:
    source = ScrapeSource(redis, lambda contract, version: [])
    assert source.window(CONTRACT, VERSION, 1000, 1060) == EMPTY


def test_scrape_window_raises_when_a_replica_does_not_answer(redis: Redis) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    source = ScrapeSource(redis, lambda contract, version: [url])
    with pytest.raises(MetricsUnavailableError, match=f"scraping {url}/metrics failed"):
        source.window(CONTRACT, VERSION, 1000, 1060)


def test_scrape_history_is_capped_and_expires(
    redis: Redis, replicas: list[Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "MAX_SAMPLES", 3)
    replica = replicas[0]
    source = scraping(redis, replica)
    for now in range(1000, 1100, 10):
        source.window(CONTRACT, VERSION, now, now)
    key = names.metrics_samples_key(CONTRACT, VERSION, replica.url)
    assert redis.zrange(key, 0, -1, withscores=True)[0][1] == 1070
    assert redis.zcard(key) == 3
    assert 0 < redis.ttl(key) <= metrics.SAMPLE_RETENTION_S
    assert redis.ttl(names.metrics_replicas_key(CONTRACT, VERSION)) > 0


# -- LocalPlatform.replica_urls and Parts.metrics_source ------------------------------------


def write_pid(home: Path, name: str, pid: int) -> None:
    """A PID file as Supervisor.start writes it."""
    runtimes = home / "pids" / "runtimes"
    runtimes.mkdir(parents=True, exist_ok=True)
    (runtimes / name).write_text(f"{pid}\n")


def dead_pid() -> int:
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                             check=True, capture_output=True, text=True)
    return int(process.stdout)


def test_replica_urls_reads_the_supervisor_s_pid_files(redis: Redis, tmp_path: Path) -> None:
    write_pid(tmp_path, "fraud_ff-scoring-v2-4001.pid", os.getpid())
    write_pid(tmp_path, "fraud_ff-scoring-v2-4002.pid", dead_pid())
    write_pid(tmp_path, "fraud_ff-scoring-v2-1-4003.pid", os.getpid())  # version v2-1
    write_pid(tmp_path, "risk_ff-scoring-v2-4004.pid", os.getpid())  # another namespace
    platform = LocalPlatform(redis, "runtime:test", home=tmp_path)
    assert platform.replica_urls(CONTRACT, VERSION) == ["http://127.0.0.1:4001"]
    assert platform.replica_urls(CONTRACT, "v3") == []
    with pytest.raises(ValueError, match="without its home"):
        LocalPlatform(redis, "runtime:test").replica_urls(CONTRACT, VERSION)


def test_the_local_metrics_source_scrapes_the_platform_s_replicas(
    redis: Redis, redis_url: str, replicas: list[Replica], tmp_path: Path
) -> None:
    replica = replicas[0]
    port = replica.url.rsplit(":", 1)[1]
    write_pid(tmp_path, f"fraud_ff-scoring-v2-{port}.pid", os.getpid())
    source = Parts(Settings(home=tmp_path, redis_url=redis_url)).metrics_source()
    assert isinstance(source, ScrapeSource)
    source.window(CONTRACT, VERSION, 1000, 1000)
    mixed_traffic(replica)
    got = source.window(CONTRACT, VERSION, 1000, 1060)
    assert (got.requests, got.error_rate) == (MIXED.requests, MIXED.error_rate)


def test_the_metrics_source_is_prometheus_when_configured(redis: Redis, tmp_path: Path) -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "FF_HOME": str(tmp_path),
           "FF_PROMETHEUS_URL": "http://127.0.0.1:9090"}
    settings = Settings.from_env(env)
    assert settings.prometheus_url == "http://127.0.0.1:9090"
    assert Settings.from_env(settings.to_env()) == settings
    source = Parts(settings).metrics_source()
    assert isinstance(source, PrometheusSource)
    source.close()
    unset = Settings.from_env({**env, "FF_PROMETHEUS_URL": ""})
    assert unset.prometheus_url is None and Settings.from_env(unset.to_env()) == unset
    with pytest.raises(SettingsError, match="FF_PROMETHEUS_URL: required on platform"):
        Parts(Settings.from_env({**env, "FF_PROMETHEUS_URL": "", "FF_PLATFORM": "knative"})
              ).metrics_source()


# -- PrometheusSource against a real Prometheus server --------------------------------------

COUNT = 'forestflow_request_duration_seconds_count{contract="fraud/scoring",variant="v2"}'


@pytest.fixture(scope="module")
def scraped() -> Iterator[Replica]:
    """The replica Prometheus scrapes. Its series exist (at zero) before any answer, so
    increase() sees them start from zero, as with a runtime that has served before."""
    replica = Replica()
    replica.series("200")
    replica.series("503")
    try:
        yield replica
    finally:
        replica.close()


@pytest.fixture(scope="module")
def prometheus(scraped: Replica, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's Prometheus, scraping `scraped` every second; its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "no `prometheus` on PATH: install Debian's prometheus package "
            "(apt-get install --no-install-recommends prometheus; CI's .ci/run does)",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("prometheus")
    target = scraped.url.removeprefix("http://")
    (home / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        f"scrape_configs:\n  - job_name: runtime\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    url = f"http://127.0.0.1:{free_port()}"
    log_path = home / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={home / 'prometheus.yml'}",
             f"--storage.tsdb.path={home / 'data'}",
             f"--web.listen-address={url.removeprefix('http://')}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited: {log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(ready, timeout=30, what="Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def instant(prometheus: str, promql: str) -> float | None:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}).json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def last_scrape(prometheus: str) -> float:
    """When Prometheus last scraped the variant's series (0 before it first did)."""
    return instant(prometheus, f"max(timestamp({COUNT}))") or 0.0


def test_prometheus_source_counts_what_happened_and_agrees_with_scraping(
    prometheus: str, scraped: Replica, redis: Redis
) -> None:
    scrape = scraping(redis, scraped)
    since = time.time()
    assert scrape.window(CONTRACT, VERSION, since, since) == EMPTY  # the baseline
    eventually(lambda: last_scrape(prometheus) > since, timeout=10,
               what="Prometheus to scrape the zero counters")
    mixed_traffic(scraped)
    eventually(lambda: instant(prometheus, f"sum({COUNT})") == 100, timeout=10,
               what="Prometheus to scrape the answers")
    source = PrometheusSource(prometheus, scrape_interval_s=1.0)
    try:
        # Evaluated at a scrape's own timestamp, from counters at zero, increase() has
        # nothing to extrapolate: the counts are exact.
        at_scrape = last_scrape(prometheus)
        got = source.window(CONTRACT, VERSION, since, at_scrape)
        assert (got.requests, got.error_rate) == (100, 0.1)
        assert got.p95_latency_ms == pytest.approx(MIXED.p95_latency_ms)
        scraped_directly = scrape.window(CONTRACT, VERSION, since, at_scrape)
        assert scraped_directly.requests == got.requests
        assert scraped_directly.error_rate == got.error_rate
        assert scraped_directly.p95_latency_ms == pytest.approx(got.p95_latency_ms)
        # Any other moment: increase() extrapolates towards both ends of a short window (by
        # up to 1.1 scrape intervals each), the same factor on every series, so the count may
        # grow but the rate and the quantile hold.
        now = source.window(CONTRACT, VERSION, since, time.time())
        assert 100 <= now.requests <= 250
        assert now.error_rate == pytest.approx(0.1, abs=0.01)
        assert now.p95_latency_ms == pytest.approx(MIXED.p95_latency_ms)
        assert source.window(CONTRACT, "v404", since, time.time()) == EMPTY
    finally:
        source.close()


def test_prometheus_source_raises_when_prometheus_fails(prometheus: str) -> None:
    now = time.time()
    down = PrometheusSource(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MetricsUnavailableError, match="unreachable"):
        down.window(CONTRACT, VERSION, now - 60, now)
    down.close()
    wrong = PrometheusSource(f"{prometheus}/no/such/prefix")
    with pytest.raises(MetricsUnavailableError, match="answered 404"):
        wrong.window(CONTRACT, VERSION, now - 60, now)
    wrong.close()


def gated_model_file(version: str, gated: bool = True) -> ModelFile:
    data = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
    data["contract"]["name"] = CONTRACT
    data["variant"]["version"] = version
    if gated:
        data["rollout"] = {
            "phase_in": {"policy": "canary", "steps": [50, 100], "hold_seconds": 60},
            "gate": {"min_requests": 20, "recheck_seconds": 1},
        }
        data["slo"] = {"p95_latency_ms": 50}
    return validate_model_file(data)


def test_a_gate_reading_real_prometheus_rolls_a_slow_canary_back(
    prometheus: str, scraped: Replica, redis: Redis
) -> None:
    """The whole gate path on real parts: the candidate's latency goes through a real
    Prometheus into the gate, which fails it mid-hold and restores the previous split."""
    store, scheduled = Store(redis), []
    source = PrometheusSource(prometheus, scrape_interval_s=1.0)
    rollouts = Rollouts(store, MemoryPlatform(), scheduled.append, lambda: source)
    try:
        register(store, gated_model_file("v1", gated=False), who="t")
        rollouts.start(CONTRACT, "v1")
        register(store, gated_model_file("v3"), who="t")
        scraped.series("200", "v3")
        rollouts.start(CONTRACT, "v3")
        assert store.get(CONTRACT).contract.traffic == {"v1": 50, "v3": 50}
        opened = time.time()
        eventually(lambda: last_scrape(prometheus) > opened, timeout=10,
                   what="Prometheus to scrape the candidate's zero counters")
        scraped.answer(40, 0.3, version="v3")
        v3 = COUNT.replace('variant="v2"', 'variant="v3"')
        eventually(lambda: instant(prometheus, f"sum({v3})") == 40, timeout=10,
                   what="Prometheus to scrape the slow answers")
        rollouts.advance(CONTRACT, "v3", scheduled[-1].token)
    finally:
        source.close()
    snapshot = store.get(CONTRACT)
    assert snapshot.contract.traffic == {"v1": 100}
    assert snapshot.variants["v3"].state.value == "failed"
    assert "over SLO 50 ms" in snapshot.variants["v3"].reason
