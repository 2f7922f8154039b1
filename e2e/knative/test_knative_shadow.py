"""Scenario (c) on a real cluster (conftest.py says what it needs): a shadow v4 beside v1,
the shadow mirror run in-process on the test's Redis against the shadow Service's own URL,
clients calling the contract's Route throughout; the agreement report is checked against
the answers of both versions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from kubernetes import client
from redis import Redis
from redis.typing import EncodableT, FieldT

from forestflow_control_plane import names
from forestflow_control_plane.names import PAYLOAD_STREAM
from forestflow_control_plane.platforms.knative import KnativePlatform
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.shadows.exporter import MirrorMetrics
from forestflow_control_plane.shadows.mirror import Mirror, MirrorConfig
from forestflow_control_plane.shadows.plan import Plans
from forestflow_control_plane.shadows.results import report
from forestflow_control_plane.shadows.targets import Target
from forestflow_control_plane.state.store import Store

from .control import service_url, spec
from .load import BODY, ROWS, Tally, addressed, infer_url, load, outputs, until, until_answered
from .test_knative_scenarios import NONE_YET, World, routed, wait_for
from .test_knative_traffic import route_revisions, template_revision

pytestmark = pytest.mark.timeout(900)

MIN_REPLAYS = 30


def call(url: str) -> httpx.Response:
    base, headers = addressed(url)
    response = httpx.post(infer_url(base), json=BODY, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response


class ServiceUrlTargets:
    """The mirror's targets as a test outside the cluster reaches them: ClusterTargets names
    the Service (`<service>.<namespace>.svc.cluster.local`), which only resolves in the
    cluster, so this uses the same Service's own URL from its status, through the ingress."""

    def __init__(self, kube: client.ApiClient) -> None:
        self._kube = kube

    def target(self, contract: str, version: str) -> Target:
        namespace, _ = names.split_contract(contract)
        url = service_url(self._kube, namespace, names.service_name(contract, version))
        assert url, f"{contract}@{version}: its Service has no URL yet"
        base, headers = addressed(url)
        return Target(base, headers.get("Host"))


def event(
    contract: str, response: httpx.Response, latency_ms: float
) -> dict[FieldT, EncodableT]:
    """A payload event as the runtime writes it, from an answer the test itself got."""
    answer = response.json()
    output = answer["outputs"][0]
    tensors = {
        "inputs": {"input": {"shape": [len(ROWS), 4], "data": [x for r in ROWS for x in r]}},
        "outputs": {output["name"]: {"shape": output["shape"], "data": output["data"]}},
    }
    return {
        "contract": contract,
        "variant": str(answer["model_version"]),
        "request_id": str(answer.get("id") or uuid.uuid4().hex),
        **{side: orjson.dumps(named) for side, named in tensors.items()},
        "latency_ms": f"{latency_ms:.3f}",
        "time": f"{time.time():.6f}",
    }


def test_a_shadow_sees_mirrored_traffic_and_its_agreement_report_is_right(
    kube: client.ApiClient, platform: KnativePlatform, redis: Redis, namespace: str, models: str,
    runtime_redis: str | None,
) -> None:
    if runtime_redis is None:
        pytest.skip("FF_RUNTIME_REDIS_URL: with a shadow the primaries sample payloads, and "
                    "their runtimes need a Redis the pods can reach")
    world, contract = World(redis, platform), f"{namespace}/mlp"
    world.deploy(spec(namespace, "v1", models))
    assert world.until_finished(contract, "v1") == "succeeded"
    shadow = spec(namespace, "v4", models, "v2", shadow={"sample_rate": 1.0})
    register(world.store, shadow, who="e2e")
    world.rollouts.start(contract, "v4")
    wait_for(lambda: platform.observe(contract).get("v4", NONE_YET).ready, "v4 to be ready")
    sampling = template_revision(kube, namespace)  # v1 samples payloads now that v4 exists
    wait_for(lambda: world.reconciled(
        contract, lambda: route_revisions(kube, namespace) == {sampling}),
        "the Route on v1's sampling revision")
    route = wait_for(lambda: routed(kube, namespace, {"v1": 100}), "the Route on v1 alone")
    url = str(route["status"]["url"])
    shadow_url = wait_for(lambda: service_url(kube, namespace, "ff-mlp-v4"), "v4's URL")
    mine, theirs = outputs(call(url)), outputs(call(shadow_url))

    # On the test cluster the runtimes write their payload events into the test's Redis;
    # elsewhere they write to FF_RUNTIME_REDIS_URL, and the test feeds its own answers.
    feed = not os.environ.get("FF_TEST_CLUSTER")
    tally = asyncio.run(mirrored_under_load(kube, redis, url, contract, feed))
    print(tally.summary("(c) shadow v4 beside v1 on knative"))
    assert tally.failures == []
    assert tally.served().keys() == {"v1"}  # a shadow never answers a client
    (shown,) = report(redis, world.store.get(contract))
    print(f"scenario (c) report: {shown}")
    rows = [(mine[i : i + 3], theirs[i : i + 3]) for i in range(0, len(mine), 3)]
    same = [a.index(max(a)) == b.index(max(b)) for a, b in rows]
    assert shown.version == "v4" and shown.primary_versions == ["v1"]
    assert shown.errors == 0 and shown.requests >= MIN_REPLAYS
    assert shown.compared == len(ROWS) * shown.requests
    assert shown.agreement == pytest.approx(sum(same) / len(same))
    # the test's answers are rounded to 4 places (load.outputs)
    differences = [abs(a - b) for a, b in zip(mine, theirs, strict=True)]
    assert shown.max_abs_diff == pytest.approx(max(differences), abs=2e-4)
    assert shown.mean_abs_diff == pytest.approx(sum(differences) / len(differences), abs=2e-4)
    assert (shown.latency_ms.shadow.p50 or 0) > 0


async def mirrored_under_load(
    kube: client.ApiClient, redis: Redis, url: str, contract: str, feed: bool
) -> Tally:
    """The mirror runs in-process on the test's Redis, reading the payload stream; with
    `feed`, the clients' answers, as the test saw them, go onto it as payload events."""
    kwargs = redis.connection_pool.connection_kwargs
    config = MirrorConfig(group="e2e-mirror", block_ms=200)
    async with (
        aioredis.Redis(host=kwargs["host"], port=kwargs["port"]) as stream,
        httpx.AsyncClient() as http,
    ):
        mirror = Mirror(stream, Plans(Store(redis).get, 1.0), ServiceUrlTargets(kube),
                        http, MirrorMetrics(), config)
        running = asyncio.create_task(mirror.run())
        try:
            await until(lambda: bool(redis.exists(PAYLOAD_STREAM)), "the mirror's group", 30)
            async with load(url) as tally, asyncio.timeout(300):
                fed = 0
                while report_requests(redis, contract) < MIN_REPLAYS:
                    await until_answered(tally, 1)
                    if not feed:
                        continue
                    for answered, latency in list(zip(tally.answers, tally.latencies_ms,
                                                        strict=False))[fed:]:
                        if answered.status_code == 200:
                            await stream.xadd(PAYLOAD_STREAM, event(contract, answered, latency))
                        fed += 1
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    return tally


def report_requests(redis: Redis, contract: str) -> int:
    return int(redis.hget(names.shadow_results_key(contract, "v4"), "requests") or 0)
