"""Shadow results in Redis: what the mirror records for each (contract, shadow) and the
report the API reads back.

Per shadow: a hash of counters, the primaries it was compared with, and the latest
`LATENCY_SAMPLES` latencies of the primary and of the shadow (capped lists); per contract,
a sorted set of each shadow's largest absolute difference (ZADD GT keeps the maximum)
and the set of shadows with results. Every key expires `RESULTS_TTL_S` after its last
write, so results of a deleted contract do not stay forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.policies.shadow import shadows
from forestflow_control_plane.shadows.agreement import Agreement
from forestflow_control_plane.state.records import ContractSnapshot

LATENCY_SAMPLES = 1000
RESULTS_TTL_S = 7 * 86_400
@dataclass(frozen=True)
class Outcome:
    """One replay of one primary request to one shadow: an agreement, or an error (then
    `agreement` is None and `shadow_latency_ms` too unless the shadow answered)."""

    contract: str
    shadow: str
    primary: str
    primary_latency_ms: float
    shadow_latency_ms: float | None
    agreement: Agreement | None
    error: str = ""


def record(pipe: Any, outcome: Outcome) -> None:
    """Queue one outcome's writes on `pipe` (a pipeline in MULTI, sync or asyncio)."""
    contract, shadow = outcome.contract, outcome.shadow
    key = names.shadow_results_key(contract, shadow)
    touched = [key, names.shadow_primaries_key(contract, shadow), names.shadows_key(contract)]
    pipe.sadd(names.shadow_primaries_key(contract, shadow), outcome.primary)
    pipe.sadd(names.shadows_key(contract), shadow)
    agreement = outcome.agreement
    if agreement is None:
        pipe.hincrby(key, "errors", 1)
    else:
        pipe.hincrby(key, "requests", 1)
        pipe.hincrby(key, "compared", agreement.rows)
        pipe.hincrby(key, "agreed", agreement.agreed)
        pipe.hincrby(key, "elements", agreement.elements)
        pipe.hincrbyfloat(key, "abs_diff_sum", agreement.abs_diff_sum)
        pipe.zadd(names.shadow_max_diff_key(contract), {shadow: agreement.max_abs_diff}, gt=True)
        touched.append(names.shadow_max_diff_key(contract))
        primary_key = names.shadow_latency_key(contract, shadow, "primary")
        _sample(pipe, primary_key, outcome.primary_latency_ms)
        touched.append(primary_key)
    if outcome.shadow_latency_ms is not None:
        shadow_key = names.shadow_latency_key(contract, shadow, "shadow")
        _sample(pipe, shadow_key, outcome.shadow_latency_ms)
        touched.append(shadow_key)
    for touched_key in touched:
        pipe.expire(touched_key, RESULTS_TTL_S)


def _sample(pipe: Any, key: str, value: float) -> None:
    pipe.lpush(key, f"{value:.3f}")
    pipe.ltrim(key, 0, LATENCY_SAMPLES - 1)


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class Latency:
    """Milliseconds over the latest mirrored requests: the primary's as it served them,
    the shadow's as the mirror measured them."""

    primary: Percentiles
    shadow: Percentiles


@dataclass(frozen=True)
class ShadowResult:
    """`compared` and `agreed` count rows (predictions); `agreement` is their ratio, null
    before anything was compared; `requests` counts the replays compared and `errors` the
    replays that failed or could not be compared."""

    version: str
    primary_versions: list[str]
    requests: int
    compared: int
    agreed: int
    agreement: float | None
    max_abs_diff: float | None
    mean_abs_diff: float | None
    errors: int
    latency_ms: Latency


@dataclass(frozen=True)
class ShadowReport:
    """The API's answer: every shadow of the contract (and former ones with results)."""

    contract: str
    shadows: list[ShadowResult]


def report(redis: Redis, snapshot: ContractSnapshot) -> list[ShadowResult]:
    """The contract's current shadows and every other version with results (a promoted
    shadow keeps its record), oldest first."""
    contract = snapshot.contract.name
    current = [s.version for s in shadows(snapshot.variants.values())]
    recorded = {m.decode() for m in redis.smembers(names.shadows_key(contract))}  # type: ignore[union-attr]
    known = {v: (r.created_at, v) for v, r in snapshot.variants.items()}
    versions = sorted(set(current) | recorded, key=lambda v: known.get(v, (float("inf"), v)))
    pipe = redis.pipeline(transaction=False)
    for version in versions:
        pipe.hgetall(names.shadow_results_key(contract, version))
        pipe.smembers(names.shadow_primaries_key(contract, version))
        pipe.lrange(names.shadow_latency_key(contract, version, "primary"), 0, -1)
        pipe.lrange(names.shadow_latency_key(contract, version, "shadow"), 0, -1)
        pipe.zscore(names.shadow_max_diff_key(contract), version)
    replies = pipe.execute()
    return [
        _result(version, *replies[5 * i : 5 * i + 5]) for i, version in enumerate(versions)
    ]


def _result(
    version: str,
    counters: dict[bytes, bytes],
    primaries: set[bytes],
    primary_ms: list[bytes],
    shadow_ms: list[bytes],
    max_abs: float | None,
) -> ShadowResult:
    def count(field: str) -> int:
        return int(counters.get(field.encode(), 0))

    compared, elements = count("compared"), count("elements")
    abs_sum = float(counters.get(b"abs_diff_sum", 0.0))
    return ShadowResult(
        version=version,
        primary_versions=sorted(p.decode() for p in primaries),
        requests=count("requests"),
        compared=compared,
        agreed=count("agreed"),
        agreement=count("agreed") / compared if compared else None,
        max_abs_diff=max_abs if count("requests") else None,
        mean_abs_diff=abs_sum / elements if elements else None,
        errors=count("errors"),
        latency_ms=Latency(_percentiles(primary_ms), _percentiles(shadow_ms)),
    )


def _percentiles(samples: list[bytes]) -> Percentiles:
    if not samples:
        return Percentiles(None, None)
    values = np.array([float(s) for s in samples])
    p50, p95 = np.percentile(values, [50, 95])
    return Percentiles(round(float(p50), 3), round(float(p95), 3))
