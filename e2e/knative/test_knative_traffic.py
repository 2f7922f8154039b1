"""Scenarios (d), (e) and (g) on a real cluster (conftest.py says what it needs): rollouts
run in-process over KnativePlatform with the test's Redis, while clients call the
contract's Route throughout and no request may fail."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from kubernetes import client
from redis import Redis

from forestflow_control_plane.platforms.knative import GROUP, VERSION, KnativePlatform
from forestflow_control_plane.platforms.local.redis_server import (
    redis_command,
    stop_redis,
    wait_for_redis,
)
from forestflow_control_plane.rollouts.deploys import register, swap_of
from forestflow_control_plane.rollouts.in_place import InPlace
from forestflow_control_plane.spec.model_file import ModelFile

from .control import spec, states, traffic
from .load import BODY, Tally, addressed, infer_url, load, outputs, until, until_answered, version
from .test_knative_scenarios import World, routed, wait_for

pytestmark = pytest.mark.timeout(900)

BURST = 50


def serving(
    kube: client.ApiClient, platform: KnativePlatform, world: World, model: ModelFile
) -> str:
    """`model` (v1) deployed and answering through the Route; the Route's URL."""
    world.deploy(model)
    contract, namespace = model.contract.name, model.contract.name.split("/")[0]
    assert world.until_finished(contract, "v1") == "succeeded"
    route = wait_for(lambda: routed(kube, namespace, {"v1": 100}), "the Route to route v1")
    return str(route["status"]["url"])


def call(url: str) -> httpx.Response:
    base, headers = addressed(url)
    response = httpx.post(infer_url(base), json=BODY, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response


async def burst(url: str) -> Tally:
    async with load(url, clients=BURST) as tally:
        await until_answered(tally, 4 * BURST, timeout=300)
    return tally


def test_a_revision_at_zero_wakes_under_a_burst_and_loses_nothing(
    kube: client.ApiClient, platform: KnativePlatform, redis: Redis, namespace: str, models: str
) -> None:
    contract = f"{namespace}/mlp"
    scaling = {"min_replicas": 0, "max_replicas": 1, "retention_seconds": 0, "window_seconds": 6}
    url = serving(kube, platform, World(redis, platform),
                  spec(namespace, "v1", models, variant={"scaling": scaling}))
    wait_for(lambda: platform.observe(contract)["v1"].replicas == 0, "v1 to go to zero")

    tally = asyncio.run(burst(url))
    print(tally.summary(f"(d) burst of {BURST} on a revision at zero, on knative"))
    assert tally.failures == []
    assert tally.served().keys() == {"v1"}
    wait_for(lambda: platform.observe(contract)["v1"].replicas == 1, "v1's one replica")


def route_revisions(kube: client.ApiClient, namespace: str) -> set[str]:
    """The revisions the Route is ready to route to, as Knative reports it."""
    route = routed(kube, namespace, {"v1": 100})
    return {t["revisionName"] for t in route["status"]["traffic"]} if route else set()


def template_revision(kube: client.ApiClient, namespace: str) -> str:
    service = cast(dict[str, Any], client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "services", "ff-mlp-v1"
    ))
    return str(service["spec"]["template"]["metadata"]["name"])


async def swap_under_load(
    kube: client.ApiClient, url: str, world: World, namespace: str, swap: Any
) -> tuple[dict[str, Any], Tally]:
    async with load(url) as tally:
        await until_answered(tally, 10)  # clients are calling before the swap starts
        done = await asyncio.to_thread(swap)
        new = await asyncio.to_thread(template_revision, kube, namespace)
        await until(lambda: world.reconciled(
            f"{namespace}/mlp", lambda: route_revisions(kube, namespace) == {new}),
            "the new revision")
        before = outputs(tally.ok()[0])
        await until(lambda: outputs(tally.ok()[-1]) != before, "answers from the new weights")
        await until_answered(tally, 10)  # and go on after it
    return done, tally


def test_an_in_place_deploy_is_a_new_revision_readied_before_it_takes_traffic(
    kube: client.ApiClient, platform: KnativePlatform, redis: Redis, namespace: str, models: str
) -> None:
    world, contract = World(redis, platform), f"{namespace}/mlp"
    url = serving(kube, platform, world, spec(namespace, "v1", models))
    before = outputs(call(url))
    old = template_revision(kube, namespace)
    new_weights = spec(namespace, "v1", models, "v2", rollout={"strategy": "in_place"})
    model = swap_of(world.store.get(contract), new_weights)
    assert model is not None
    register(world.store, new_weights, who="e2e")  # as the API does: the job changes the spec

    def swap() -> dict[str, Any]:
        with httpx.Client() as http:
            swaps = InPlace(world.store, platform, platform.replica_urls, http, world.clock)
            return swaps.run(contract, "v1", model)

    done, tally = asyncio.run(swap_under_load(kube, url, world, namespace, swap))
    print(tally.summary("(e) in-place deploy under load on knative"))
    assert done["rollout"]["progress"]["status"] == "succeeded", done
    assert tally.failures == []
    assert tally.served().keys() == {"v1"}
    after = outputs(call(url))
    assert after != before
    assert {outputs(r) for r in tally.ok()} <= {before, after}
    assert outputs(tally.ok()[-1]) == after
    assert template_revision(kube, namespace) != old
    assert world.store.get(contract).variants["v1"].spec["revision"] == 2


def restart(
    redis: Redis, port: int, data_dir: Path, log: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """Redis back on its port with its append-only file, once it answers."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            redis_command(port, data_dir), stdout=out, stderr=out, stdin=subprocess.DEVNULL
        )
    started.append(process)
    wait_for_redis(f"redis://127.0.0.1:{port}/0", lambda: process.poll() is None)
    redis.connection_pool.disconnect()  # drop the connections to the dead server


async def restart_redis_under_load(
    redis: Redis, url: str, log: Path, then: Any, started: list[subprocess.Popen[bytes]]
) -> tuple[Tally, int]:
    port = int(redis.connection_pool.connection_kwargs["port"])
    data_dir = Path(str(redis.config_get("dir")["dir"]))
    async with load(url) as tally:
        await until_answered(tally, 10)
        os.kill(int(redis.info("server")["process_id"]), signal.SIGKILL)
        during = tally.total
        await until_answered(tally, 50)  # served with no Redis at all
        served_without_redis = tally.total - during
        await asyncio.to_thread(restart, redis, port, data_dir, log, started)
        await asyncio.to_thread(then)
        await until_answered(tally, 10)
    return tally, served_without_redis


def test_the_route_serves_through_a_redis_restart_and_the_control_plane_recovers(
    kube: client.ApiClient, platform: KnativePlatform, redis: Redis, namespace: str,
    models: str, tmp_path: Path,
) -> None:
    world, contract = World(redis, platform), f"{namespace}/mlp"
    url = serving(kube, platform, world, spec(namespace, "v1", models))

    def deploy_v2() -> None:
        assert states(redis, contract) == {"v1": "serving"}  # the store came back
        world.deploy(spec(namespace, "v2", models))
        assert world.until_finished(contract, "v2") == "succeeded"
        wait_for(lambda: routed(kube, namespace, {"v1": 0, "v2": 100}), "the Route on v2")
        wait_for(lambda: version(call(url)) == "v2", "v2's answers through the Route")

    started: list[subprocess.Popen[bytes]] = []
    try:
        tally, served_without_redis = asyncio.run(
            restart_redis_under_load(redis, url, tmp_path / "redis-again.log", deploy_v2, started)
        )
        print(tally.summary("(g) Redis restarted during traffic, on knative"))
        assert tally.failures == []
        assert served_without_redis >= 50
        assert traffic(redis, contract) == {"v2": 100}
        assert version(tally.ok()[-1]) == "v2"
    finally:
        for process in started:
            stop_redis(process)
