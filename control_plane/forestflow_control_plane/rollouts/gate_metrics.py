"""Where rollout gates get their numbers: one variant's p95 latency, error rate and request
count over a window, from a Prometheus server (PromQL over its HTTP API) when one is
configured, else by scraping the local runtimes' /metrics directly.

Both read the runtime's histogram `forestflow_request_duration_seconds` (labels model,
contract, variant, protocol, code). A source that cannot answer raises
MetricsUnavailableError, so the gate holds: it never passes on numbers it does not have.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.policies.gates import Metrics
from forestflow_control_plane.state.text import text

HISTOGRAM = "forestflow_request_duration_seconds"
QUANTILE = 0.95
HTTP_TIMEOUT_S = 10.0
# Prometheus' shipped example config scrapes every 15 s (its built-in default is 1 min).
DEFAULT_SCRAPE_INTERVAL_S = 15.0
# Scrape samples kept per replica: at the gates' 30 s recheck, about 8 hours of baselines.
MAX_SAMPLES = 1000
SAMPLE_RETENTION_S = 24 * 3600.0

ReplicaFinder = Callable[[str, str], list[str]]


class MetricsUnavailableError(RuntimeError):
    """The metrics could not be read; the message says from where and why."""


class MetricsSource(Protocol):
    def window(self, contract: str, version: str, since: float, now: float) -> Metrics:
        """The variant's metrics over [since, now] (epoch seconds); raises
        MetricsUnavailableError when they cannot be read."""
        ...


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The q-quantile of a histogram given as (upper bound, cumulative count) pairs, exactly
    as PromQL's histogram_quantile computes it, so both sources agree: linear interpolation
    within the bucket holding the rank, the lowest bucket starting at 0, and the
    second-highest bound when the rank falls in +Inf. NaN when there is nothing to judge."""
    if not 0 <= q <= 1:
        raise ValueError(f"q: must be in 0..1, got {q}")
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    if len(ordered) < 2 or ordered[-1][0] != math.inf:
        return math.nan
    bounds = [bound for bound, _ in ordered]
    counts: list[float] = []
    for _, count in ordered:  # counts that went down (a scrape mid-update) are levelled up
        counts.append(max(count, counts[-1]) if counts else count)
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i, count in enumerate(counts[:-1]) if count >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, count = 0.0, counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (bounds[b] - start) * (rank / count)


def _metrics(requests: float, errors: float, p95_seconds: float) -> Metrics:
    """Counts rounded to whole requests (Prometheus extrapolates increase() to the window's
    edges: 99.7 means 100); no requests, or no latency to go with them, is an empty window."""
    count = round(requests)
    if count <= 0 or math.isnan(p95_seconds):
        return Metrics(0.0, 0.0, 0)
    failed = min(max(round(errors), 0), count)
    return Metrics(p95_seconds * 1000, failed / count, count)


class PrometheusSource:
    """PromQL over Prometheus' HTTP API, evaluated at `now`.

    The range is ceil(now - since) seconds, but at least two scrape intervals: increase()
    needs two samples in its range, so a shorter window is widened backwards. increase()
    extrapolates to the range's edges, so counts come back fractional and are rounded.
    """

    def __init__(
        self,
        url: str,
        client: httpx.Client | None = None,
        scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    ) -> None:
        self._url = url.rstrip("/")
        self._owned = client is None
        self._client = client if client is not None else httpx.Client(timeout=HTTP_TIMEOUT_S)
        self._scrape_interval_s = scrape_interval_s

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def window(self, contract: str, version: str, since: float, now: float) -> Metrics:
        seconds = max(math.ceil(now - since), math.ceil(2 * self._scrape_interval_s), 1)
        labels = f"contract={_promql_string(contract)},variant={_promql_string(version)}"
        count = f"{HISTOGRAM}_count{{{labels}}}"
        failed = f'{HISTOGRAM}_count{{{labels},code=~"5.."}}'
        buckets = f"{HISTOGRAM}_bucket{{{labels}}}"
        requests = self._query(f"sum(increase({count}[{seconds}s]))", now)
        if requests is None or round(requests) <= 0:
            return Metrics(0.0, 0.0, 0)
        errors = self._query(f"sum(increase({failed}[{seconds}s]))", now)
        p95 = self._query(
            f"histogram_quantile({QUANTILE}, sum by (le) (increase({buckets}[{seconds}s])))", now
        )
        return _metrics(requests, errors or 0.0, math.nan if p95 is None else p95)

    def _query(self, promql: str, at: float) -> float | None:
        """The value of a one-element instant vector; None when the vector is empty."""
        where = f"Prometheus at {self._url}"
        try:
            response = self._client.get(
                f"{self._url}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"}
            )
        except httpx.HTTPError as exc:
            raise MetricsUnavailableError(f"{where} is unreachable or silent: {exc!r}") from exc
        try:
            body: Any = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or (
            body.get("status") != "success"
        ):
            why = body.get("error") if isinstance(body, dict) else None
            raise MetricsUnavailableError(
                f"{where} answered {response.status_code} to {promql!r}: "
                f"{why or response.text[:200]}"
            )
        try:
            result = body["data"]["result"]
            return float(result[0]["value"][1]) if result else None
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise MetricsUnavailableError(f"{where}: unexpected answer to {promql!r}") from exc


def _promql_string(value: str) -> str:
    # A JSON string is a valid PromQL double-quoted string (same escapes).
    return json.dumps(value)


@dataclass(frozen=True)
class Cumulative:
    """One replica's counters for one variant as exposed (since the replica started), or the
    difference of two such. Bucket bounds are keyed as repr(float), e.g. '0.005', 'inf'."""

    count: float = 0.0
    errors: float = 0.0
    buckets: Mapping[str, float] = field(default_factory=dict)
    created: float = 0.0  # earliest series creation time; 0 when not exposed

    def plus(self, other: Cumulative) -> Cumulative:
        return self._combine(other, 1.0)

    def minus(self, other: Cumulative) -> Cumulative:
        return self._combine(other, -1.0)

    def restarted_since(self, earlier: Cumulative) -> bool:
        """A counter went down, or the series were created anew: the replica restarted."""
        if self.count < earlier.count or self.errors < earlier.errors:
            return True
        if any(self.buckets.get(le, 0.0) < n for le, n in earlier.buckets.items()):
            return True
        return bool(earlier.created and self.created and self.created != earlier.created)

    def _combine(self, other: Cumulative, sign: float) -> Cumulative:
        buckets = {
            le: self.buckets.get(le, 0.0) + sign * other.buckets.get(le, 0.0)
            for le in self.buckets.keys() | other.buckets.keys()
        }
        return Cumulative(
            self.count + sign * other.count, self.errors + sign * other.errors, buckets
        )


def parse_exposition(text: str, contract: str, version: str) -> Cumulative:
    """The variant's latency histogram in one /metrics page, summed over its other labels."""
    count = errors = 0.0
    buckets: dict[str, float] = {}
    created: list[float] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("contract") != contract or labels.get("variant") != version:
                continue
            if sample.name == f"{HISTOGRAM}_count":
                count += sample.value
                code = labels.get("code", "")
                if len(code) == 3 and code.startswith("5"):
                    errors += sample.value
            elif sample.name == f"{HISTOGRAM}_bucket":
                le = repr(float(labels["le"]))
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == f"{HISTOGRAM}_created":
                created.append(sample.value)
    return Cumulative(count, errors, buckets, min(created, default=0.0))


def increase(baseline: Cumulative | None, later: Sequence[Cumulative]) -> Cumulative:
    """What a replica counted from `baseline` through `later` (oldest first), as PromQL's
    increase() without extrapolation: a restart between two samples counts the newer
    sample from zero. No baseline counts everything since the replica started."""
    total = Cumulative()
    previous = baseline or Cumulative()
    for sample in later:
        total = total.plus(sample if sample.restarted_since(previous) else sample.minus(previous))
        previous = sample
    return total


class ScrapeSource:
    """Scrapes each replica's /metrics and sums the replicas. A scrape is cumulative, so
    every one is kept in Redis (per contract, version and replica URL; capped, expiring);
    a window is the newest scrape taken at or before `since` subtracted from the scrapes
    since, restarts handled as Prometheus does. Each call stores its own scrape, so calling
    `window` when a window opens makes the baseline that a later call subtracts. A replica
    gone by `now` still counts what its stored scrapes saw after `since`.
    """

    def __init__(
        self, redis: Redis, replicas: ReplicaFinder, client: httpx.Client | None = None
    ) -> None:
        self._redis = redis
        self._replicas = replicas
        self._owned = client is None
        self._client = client if client is not None else httpx.Client(timeout=HTTP_TIMEOUT_S)

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def window(self, contract: str, version: str, since: float, now: float) -> Metrics:
        replicas = self._replicas(contract, version)
        live = {url: self._scrape(url, contract, version) for url in replicas}
        seen_key = names.metrics_replicas_key(contract, version)
        seen = self._redis.zrangebyscore(seen_key, since, "+inf")
        urls = sorted(live.keys() | {text(raw) for raw in seen})
        pipe = self._redis.pipeline(transaction=False)
        for url in urls:
            key = names.metrics_samples_key(contract, version, url)
            pipe.zrevrangebyscore(key, since, "-inf", start=0, num=1)
            pipe.zrangebyscore(key, f"({since!r}", now)
        rows = pipe.execute()
        total = Cumulative()
        for i, url in enumerate(urls):
            before, after = rows[2 * i], rows[2 * i + 1]
            later = [_load(raw) for raw in after] + ([live[url]] if url in live else [])
            total = total.plus(increase(_load(before[0]) if before else None, later))
        self._store(contract, version, live, now)
        bounds = [(float(le), n) for le, n in total.buckets.items()]
        return _metrics(total.count, total.errors, histogram_quantile(QUANTILE, bounds))

    def _scrape(self, url: str, contract: str, version: str) -> Cumulative:
        try:
            response = self._client.get(f"{url.rstrip('/')}/metrics")
            response.raise_for_status()
            return parse_exposition(response.text, contract, version)
        except (httpx.HTTPError, ValueError) as exc:
            raise MetricsUnavailableError(f"scraping {url}/metrics failed: {exc!r}") from exc

    def _store(
        self, contract: str, version: str, live: Mapping[str, Cumulative], now: float
    ) -> None:
        if not live:
            return
        seen = names.metrics_replicas_key(contract, version)
        pipe = self._redis.pipeline()
        for url, sample in live.items():
            key = names.metrics_samples_key(contract, version, url)
            pipe.zadd(key, {_dump(sample, now): now})
            pipe.zremrangebyscore(key, "-inf", now - SAMPLE_RETENTION_S)
            pipe.zremrangebyrank(key, 0, -MAX_SAMPLES - 1)
            pipe.expire(key, int(SAMPLE_RETENTION_S))
            pipe.zadd(seen, {url: now}, gt=True)
        pipe.zremrangebyscore(seen, "-inf", now - SAMPLE_RETENTION_S)
        pipe.expire(seen, int(SAMPLE_RETENTION_S))
        pipe.execute()


def _dump(sample: Cumulative, at: float) -> bytes:
    # `at` keeps two equal scrapes taken at different times distinct members.
    return orjson.dumps(
        {"at": at, "count": sample.count, "errors": sample.errors,
         "buckets": dict(sample.buckets), "created": sample.created}
    )


def _load(raw: bytes) -> Cumulative:
    row = orjson.loads(raw)
    return Cumulative(row["count"], row["errors"], row["buckets"], row["created"])
