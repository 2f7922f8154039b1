"""Rollouts on the test cluster through real RQ workers (FF_PLATFORM=knative, on the
ServiceAccount knative/control-plane.yaml binds), judged by what the API server records:
the Route's status at every step, Knative's reasons, and etcd's order of events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from redis import Redis

from forestflow_control_plane.spec.model_file import ModelFile
from forestflow_control_plane.state.store import Store
from tests.control_plane import knative_agreement as agreement

from .cluster_view import Events, condition, get, model
from .control import (
    Workers,
    enqueue_deploy,
    enqueue_swap,
    finished,
    rollout,
    spec,
    states,
    traffic,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def workers(redis: Redis, tmp_path: Path) -> Iterator[Workers]:
    """Real RQ worker processes with FF_PLATFORM=knative, on the worker's ServiceAccount."""
    kwargs = redis.connection_pool.connection_kwargs
    pool = Workers(f"redis://{kwargs['host']}:{kwargs['port']}/0", tmp_path / "worker")
    pool.start()
    try:
        yield pool
    finally:
        pool.stop_all()


def deployed(redis: Redis, workers: Workers, model: ModelFile) -> str:
    """Enqueue `model`'s rollout as the API does; the status it finished with."""
    enqueue_deploy(redis, model)
    contract, version = model.contract.name, model.variant.version
    return wait_for(lambda: finished(redis, contract, version),
                    f"{version}'s rollout; worker: {workers.tail()}")


def canary(steps: list[int], hold: float = 1.0) -> dict[str, Any]:
    return {"phase_in": {"policy": "canary", "steps": steps, "hold_seconds": hold}}


def steps(route_seen: list[tuple[str, dict[str, Any]]]) -> list[dict[str, int]]:
    """The splits the contract Route's spec went through, each checked to have been in its
    status (served) before the spec moved on."""
    specs: list[dict[str, int]] = []
    statuses: list[dict[str, int]] = []
    for _, route in route_seen:
        if route["metadata"]["name"] != "mlp":
            continue
        asked = {t["tag"]: t["percent"] for t in route["spec"]["traffic"] if t["percent"]}
        if not specs or specs[-1] != asked:
            assert not specs or specs[-1] in statuses, (
                f"the spec moved to {asked} before the Route served {specs[-1]}"
            )
            specs.append(asked)
        statuses.append(agreement.served(route))
    return specs


def test_a_candidate_that_never_becomes_ready_fails_its_rollout_with_the_reason(
    kube: client.ApiClient, redis: Redis, namespace: str, contract: str, workers: Workers,
    models: str,
) -> None:
    assert deployed(redis, workers, model(models, namespace, "v1")) == "succeeded"
    stuck = spec(namespace, "v2", models, rollout=canary([10, 100]),
                 variant={"resources": {"cpu": "500"}})  # more than the one node has
    assert deployed(redis, workers, stuck) == "rolled_back"
    record = rollout(redis, contract)
    assert record is not None
    reason = record.progress.reason  # Knative's own words on the revision
    assert reason.startswith("revision ff-mlp-v2-") and "Unschedulable" in reason, reason
    assert "Insufficient cpu" in reason, reason
    assert states(redis, contract)["v2"] == "failed"
    assert traffic(redis, contract) == {"v1": 100}
    assert agreement.settled(get(kube, namespace, "routes", "mlp"), {"v1": 100})


def test_each_canary_step_is_served_before_the_next_begins(
    kube: client.ApiClient, redis: Redis, namespace: str, contract: str, workers: Workers,
    route_events: Events, models: str,
) -> None:
    assert deployed(redis, workers, model(models, namespace, "v1")) == "succeeded"
    v2 = spec(namespace, "v2", models, rollout=canary([10, 50, 100]))
    assert deployed(redis, workers, v2) == "succeeded"
    settled_route = wait_for(lambda: agreement.settled(get(kube, namespace, "routes", "mlp"),
                                              {"v2": 100}), "v2 at 100 %")
    assert settled_route is not None
    assert steps(route_events.stop()) == [
        {"v1": 100}, {"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}, {"v2": 100},
    ]


def test_a_worker_killed_mid_rollout_is_carried_on_by_another(
    kube: client.ApiClient, redis: Redis, namespace: str, contract: str, workers: Workers,
    route_events: Events, models: str,
) -> None:
    first = workers.processes[0]
    assert deployed(redis, workers, model(models, namespace, "v1")) == "succeeded"
    enqueue_deploy(redis, spec(namespace, "v2", models, rollout=canary([10, 50, 100], hold=3)))
    wait_for(lambda: (record := rollout(redis, contract)) is not None
             and record.candidate == "v2" and record.progress.step >= 1, "v2's second step")
    workers.kill(first)
    second = workers.start()
    assert wait_for(lambda: finished(redis, contract, "v2"), "v2's rollout") == "succeeded"
    assert first.returncode == -9 and second.poll() is None, workers.tail()
    wait_for(lambda: agreement.settled(get(kube, namespace, "routes", "mlp"), {"v2": 100}),
             "v2 at 100 %")
    assert steps(route_events.stop()) == [
        {"v1": 100}, {"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}, {"v2": 100},
    ]


def test_an_in_place_swap_is_a_new_revision_routed_only_once_ready(
    kube: client.ApiClient, redis: Redis, namespace: str, contract: str, workers: Workers,
    route_events: Events, models: str,
) -> None:
    assert deployed(redis, workers, model(models, namespace, "v1")) == "succeeded"

    def revision() -> str:
        service = get(kube, namespace, "services", "ff-mlp-v1")
        assert service is not None
        return str(service["spec"]["template"]["metadata"]["name"])

    old = revision()
    revisions = Events(kube, namespace, "revisions")
    new_weights = spec(namespace, "v1", models, "v2", rollout={"strategy": "in_place"})
    job = enqueue_swap(redis, new_weights)
    wait_for(lambda: job.get_status(refresh=True) in ("finished", "failed"), "the swap job")
    assert job.return_value()["rollout"]["progress"]["status"] == "succeeded", job.exc_info
    new = revision()
    assert new != old

    def serving_new() -> dict[str, Any] | None:
        route = agreement.settled(get(kube, namespace, "routes", "mlp"), {"v1": 100})
        if route is None:
            return None
        named = {t.get("revisionName") for t in route["status"]["traffic"]}
        return route if named == {new} else None

    wait_for(serving_new, "the Route on the new revision")
    ready_at = next(
        int(o["metadata"]["resourceVersion"]) for _, o in revisions.stop()
        if o["metadata"]["name"] == new and condition(o, "Ready") == "True"
    )
    named_at = next(
        int(o["metadata"]["resourceVersion"]) for _, o in route_events.stop()
        if new in {t.get("revisionName") for t in o["spec"]["traffic"]}
    )
    assert ready_at < named_at  # one etcd: resource versions are its revisions, in order
    assert Store(redis).get(contract).variants["v1"].spec["revision"] == 2
