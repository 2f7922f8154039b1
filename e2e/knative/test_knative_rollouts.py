"""Scenarios (a), (b) and (f) on a real cluster (conftest.py says what it needs), driven as a
user's deploys are: each version registered and its rollout enqueued as the API does, real
RQ worker processes with FF_PLATFORM=knative running the steps, gates reading Prometheus
(FF_PROMETHEUS_URL), and clients calling the contract's Route throughout."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from redis import Redis

from forestflow_control_plane.platforms.knative import KnativePlatform

from .control import (
    PROMETHEUS,
    PROMETHEUS_MISSING,
    Workers,
    enqueue_deploy,
    finished,
    rollout,
    services,
    spec,
    states,
    traffic,
)
from .load import Tally, load, until, until_answered, version
from .test_knative_scenarios import NONE_YET, routed, wait_for

pytestmark = pytest.mark.timeout(1200)

ROLLOUT_S = 600.0


@pytest.fixture
def workers(redis: Redis, tmp_path: Path) -> Iterator[Workers]:
    if not PROMETHEUS:
        pytest.skip(PROMETHEUS_MISSING)
    kwargs = redis.connection_pool.connection_kwargs
    pool = Workers(f"redis://{kwargs['host']}:{kwargs['port']}/0", tmp_path / "worker")
    try:
        yield pool
    finally:
        pool.stop_all()


def serving_v1(
    kube: client.ApiClient, platform: KnativePlatform, redis: Redis, namespace: str,
    models: str, workers: Workers,
) -> str:
    """v1 deployed through the worker and answering; the Route's URL."""
    contract = f"{namespace}/mlp"
    enqueue_deploy(redis, spec(namespace, "v1", models))
    wait_for(lambda: finished(redis, contract, "v1"), f"v1's rollout; worker: {workers.tail()}")
    wait_for(lambda: platform.observe(contract).get("v1", NONE_YET).ready, "v1 to be ready")
    route = wait_for(lambda: routed(kube, namespace, {"v1": 100}), "the Route to route v1")
    return str(route["status"]["url"])


def canary(**gate: Any) -> dict[str, Any]:
    phase_in = {"policy": "canary", "steps": [50, 100], "hold_seconds": gate.pop("hold", 45)}
    return {"phase_in": phase_in, **({"gate": gate} if gate else {})}


async def deploy_under_load(
    url: str, redis: Redis, contract: str, model: Any
) -> tuple[str, Tally]:
    """Enqueue `model`'s rollout while clients call; its final status once it finished."""
    async with load(url) as tally:
        await until_answered(tally, 10)
        enqueue_deploy(redis, model)
        candidate = model.variant.version
        await until(lambda: bool(finished(redis, contract, candidate)), "the rollout", ROLLOUT_S)
        await until_answered(tally, 10)
    return str(finished(redis, contract, candidate)), tally


def test_a_gated_canary_reaches_100_percent_and_the_old_version_expires(
    kube: client.ApiClient, platform: KnativePlatform, redis: Redis, namespace: str,
    models: str, workers: Workers,
) -> None:
    workers.start()
    contract = f"{namespace}/mlp"
    url = serving_v1(kube, platform, redis, namespace, models, workers)
    v2 = spec(
        namespace, "v2", models,
        rollout=canary(min_requests=20, recheck_seconds=5, margin=1.0),
        slo={"p95_latency_ms": 500, "error_rate": 0.01},
        expiry={"on_replacement": True},
    )

    status, tally = asyncio.run(deploy_under_load(url, redis, contract, v2))
    print(tally.summary("(a) gated canary to 100 % on knative"))
    assert status == "succeeded", (rollout(redis, contract), workers.tail())
    record = rollout(redis, contract)
    assert record is not None and record.gate is not None and record.gate.passed is True
    assert tally.failures == []
    assert set(tally.served()) == {"v1", "v2"}
    assert version(tally.ok()[-1]) == "v2"
    assert traffic(redis, contract) == {"v2": 100}
    assert states(redis, contract) == {"v1": "expired", "v2": "serving"}
    wait_for(lambda: services(kube, namespace) == ["ff-mlp-v2"], "the expired v1's deletion")
    wait_for(lambda: routed(kube, namespace, {"v2": 100}), "the Route without v1")


def test_a_slow_canary_fails_its_gate_and_rolls_back(
    kube: client.ApiClient, platform: KnativePlatform, redis: Redis, namespace: str,
    models: str, workers: Workers,
) -> None:
    workers.start()
    contract = f"{namespace}/mlp"
    url = serving_v1(kube, platform, redis, namespace, models, workers)
    v3 = spec(
        namespace, "v3", models, "slow",
        variant={"cpu_threads": 1},
        rollout=canary(hold=120, min_requests=20, recheck_seconds=5),
        slo={"p95_latency_ms": 50},
    )

    status, tally = asyncio.run(deploy_under_load(url, redis, contract, v3))
    print(tally.summary("(b) slow canary rolled back on knative"))
    record = rollout(redis, contract)
    assert status == "rolled_back", (record, workers.tail())
    assert record is not None and record.gate is not None
    assert record.gate.passed is False and "over SLO 50 ms" in record.gate.reason
    assert tally.failures == []
    assert set(tally.served()) == {"v1", "v3"}  # the canary took traffic before it failed
    assert version(tally.ok()[-1]) == "v1"
    assert traffic(redis, contract) == {"v1": 100}
    assert states(redis, contract)["v3"] == "failed"
    wait_for(lambda: services(kube, namespace) == ["ff-mlp-v1"], "the failed v3's deletion")
    wait_for(lambda: routed(kube, namespace, {"v1": 100}), "the Route back on v1 alone")


async def kill_worker_mid_rollout(
    url: str, redis: Redis, contract: str, model: Any, workers: Workers,
    first: subprocess.Popen[bytes],
) -> tuple[subprocess.Popen[bytes], Tally]:
    async with load(url) as tally:
        await until_answered(tally, 10)
        enqueue_deploy(redis, model)
        await until(
            lambda: traffic(redis, contract) == {"v1": 50, "v2": 50}, "the canary's first step"
        )
        token = current_token(redis, contract)
        workers.kill(first)
        assert current_token(redis, contract) == token  # nothing moved without a worker
        assert traffic(redis, contract) == {"v1": 50, "v2": 50}
        second = workers.start()
        await until(
            lambda: finished(redis, contract, "v2") == "succeeded", "the rollout to go on",
            ROLLOUT_S,
        )
        await until_answered(tally, 10)
    return second, tally


def test_a_killed_worker_mid_rollout_resumes_and_no_request_fails(
    kube: client.ApiClient, platform: KnativePlatform, redis: Redis, namespace: str,
    models: str, workers: Workers,
) -> None:
    first = workers.start()
    contract = f"{namespace}/mlp"
    url = serving_v1(kube, platform, redis, namespace, models, workers)
    v2 = spec(namespace, "v2", models, rollout=canary(hold=30))

    second, tally = asyncio.run(
        kill_worker_mid_rollout(url, redis, contract, v2, workers, first)
    )
    print(tally.summary("(f) worker SIGKILLed mid-rollout on knative"))
    assert first.returncode == -9
    assert second.poll() is None, workers.tail()  # the new worker finished the rollout
    assert tally.failures == []
    assert set(tally.served()) == {"v1", "v2"}
    assert version(tally.ok()[-1]) == "v2"
    assert traffic(redis, contract) == {"v2": 100}
    wait_for(lambda: routed(kube, namespace, {"v1": 0, "v2": 100}), "all traffic on v2")


def current_token(redis: Redis, contract: str) -> int:
    record = rollout(redis, contract)
    assert record is not None, f"{contract} has no rollout"
    return record.token
