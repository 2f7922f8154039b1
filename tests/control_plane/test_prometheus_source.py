"""PrometheusSource against a real Prometheus server scraping a runtime-shaped replica, and
a rollout gate reading it end to end."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from redis import Redis

from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.rollouts.gate_metrics import MetricsUnavailableError, PrometheusSource
from forestflow_control_plane.spec.model_file import ModelFile, validate_model_file
from forestflow_control_plane.state.store import Store
from tests.control_plane.memory_platform import MemoryPlatform
from tests.support import REPO, eventually, free_port

from .metrics_support import CONTRACT, EMPTY, MIXED, VERSION, Replica, mixed_traffic, scraping

# Bounds for a loaded machine, not budgets: Prometheus starting, and scraping every second.
STARTED_S = 120.0
SCRAPED_S = 60.0
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
        eventually(ready, timeout=STARTED_S, what="Prometheus to be ready")
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
    eventually(lambda: last_scrape(prometheus) > since, timeout=SCRAPED_S,
               what="Prometheus to scrape the zero counters")
    mixed_traffic(scraped)
    eventually(lambda: instant(prometheus, f"sum({COUNT})") == 100, timeout=SCRAPED_S,
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
        eventually(lambda: last_scrape(prometheus) > opened, timeout=SCRAPED_S,
                   what="Prometheus to scrape the candidate's zero counters")
        scraped.answer(40, 0.3, version="v3")
        v3 = COUNT.replace('variant="v2"', 'variant="v3"')
        eventually(lambda: instant(prometheus, f"sum({v3})") == 40, timeout=SCRAPED_S,
                   what="Prometheus to scrape the slow answers")
        rollouts.advance(CONTRACT, "v3", scheduled[-1].token)
    finally:
        source.close()
    snapshot = store.get(CONTRACT)
    assert snapshot.contract.traffic == {"v1": 100}
    assert snapshot.variants["v3"].state.value == "failed"
    assert "over SLO 50 ms" in snapshot.variants["v3"].reason
