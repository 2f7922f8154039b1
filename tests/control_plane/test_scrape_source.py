"""ScrapeSource against runtime-shaped /metrics pages served over real HTTP and real Redis
for the scrape history; the local platform's replicas as the source finds them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.composition import Parts
from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.rollouts import gate_metrics as metrics
from forestflow_control_plane.rollouts.gate_metrics import (
    MetricsUnavailableError,
    PrometheusSource,
    ScrapeSource,
)
from forestflow_control_plane.settings import Settings, SettingsError
from tests.support import free_port

from .metrics_support import CONTRACT, EMPTY, MIXED, VERSION, Replica, mixed_traffic, scraping


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    """Two replicas of the variant; a test uses one or both."""
    started = [Replica(), Replica()]
    try:
        yield started
    finally:
        for replica in started:
            replica.close()


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
