"""The knative platform on a real cluster (conftest.py says what it needs): rollouts drive
KnativePlatform; a variant becomes Ready and answers through its contract's Route; a canary
moves the Route's traffic between revisions; removing the contract removes its objects."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
import pytest
from kubernetes import client
from redis import Redis

from forestflow_control_plane.platforms.base import VariantStatus
from forestflow_control_plane.platforms.knative import GROUP, VERSION, KnativePlatform
from forestflow_control_plane.policies.desired import DesiredState
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import Rollouts, StepCall
from forestflow_control_plane.spec.model_file import ModelFile, validate_model_file
from forestflow_control_plane.state.store import Store
from tests.control_plane.test_rollouts import Clock

from .cluster_view import get
from .control import wait_for

pytestmark = pytest.mark.timeout(900)

ROW = [0.1, 0.2, 0.3, 0.4]
T = TypeVar("T")
NONE_YET = VariantStatus("", ready=False, replicas=0)


def model_file(
    namespace: str, version: str, models: str, phase_in: dict[str, Any] | None = None,
    **expiry: Any,
) -> ModelFile:
    return validate_model_file({
        "contract": {
            "name": f"{namespace}/mlp",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}],
        },
        "variant": {
            "version": version,
            "model": {"uri": f"{models}/{version}.pt2", "format": "torch_export"},
            "scaling": {"min_replicas": 1, "max_replicas": 1},
        },
        "rollout": {"phase_in": phase_in or {"policy": "immediate"}},
        "expiry": expiry,
    })


class World:
    """Rollouts over KnativePlatform with a private Redis and a clock the test moves."""

    def __init__(self, redis: Redis, platform: KnativePlatform) -> None:
        self.clock = Clock()
        self.scheduled: list[StepCall] = []
        self.store = Store(redis, clock=self.clock)
        self.rollouts = Rollouts(self.store, platform, self.scheduled.append, clock=self.clock)

    def deploy(self, model: ModelFile) -> None:
        register(self.store, model, who="e2e")
        self.rollouts.start(model.contract.name, model.variant.version)

    def next_step(self, contract: str, version: str) -> None:
        step = self.scheduled[-1]
        self.clock.now = step.at
        self.rollouts.advance(contract, version, step.token)

    def reconciled(self, contract: str, check: Callable[[], T | None]) -> T | None:
        """`check`, after a reconcile pass (what the worker runs every few seconds)."""
        self.rollouts.reconcile(contract)
        return check()

    def until_step(self, contract: str, version: str, step: int) -> None:
        """Take due steps, as the worker would, until the rollout is past `step` or done:
        a step the Route does not serve yet is taken again."""
        waiting = ""

        def moved() -> bool:
            nonlocal waiting
            record = self.store.get(contract).contract.rollout
            assert record is not None, f"{contract} has no rollout"
            if record.finished or record.progress.step > step:
                return True
            self.next_step(contract, version)
            waiting = record.progress.reason
            return False
        wait_for(moved, f"{version}'s rollout past step {step}",
                 why=lambda: f"its rollout says: {waiting or 'nothing'}")

    def until_finished(self, contract: str, version: str) -> str:
        """Steps taken as they fall due until `version`'s rollout ends; how it ended."""
        self.until_step(contract, version, 1 << 30)
        record = self.store.get(contract).contract.rollout
        assert record is not None
        return record.status.value


@pytest.fixture
def world(redis: Redis, platform: KnativePlatform) -> World:
    return World(redis, platform)


def routed(kube: client.ApiClient, namespace: str, want: dict[str, int]) -> dict[str, Any] | None:
    """The Route, once Knative is ready to route `want` (tag: percent) for its current spec."""
    route = get(kube, namespace, "routes", "mlp")
    if route is None:  # the first apply makes only the Services; the Route follows
        return None
    status = route.get("status") or {}
    ready = any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )
    traffic = {t.get("tag"): t.get("percent", 0) for t in status.get("traffic") or []}
    current = status.get("observedGeneration") == route["metadata"]["generation"]
    return route if ready and current and traffic == want else None


def answer(url: str) -> str | None:
    """Which variant answered one inference through `url`; None while it does not answer."""
    target, headers = url, {}
    if ingress := os.environ.get("FF_E2E_INGRESS"):
        target, headers = ingress, {"Host": urlparse(url).netloc}
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}
    try:
        reply = httpx.post(f"{target}/v2/models/mlp/infer", json=body, headers=headers,
                           timeout=60)
    except httpx.TransportError:
        return None
    if reply.status_code != 200:
        return None
    assert len(reply.json()["outputs"][0]["data"]) == 3
    return str(reply.json()["model_version"])


def labelled(kube: client.ApiClient, namespace: str, plural: str) -> list[str]:
    listed = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, label_selector=f"forestflow.dev/contract={namespace}.mlp"
    )
    return sorted(item["metadata"]["name"] for item in listed["items"])


def test_a_variant_becomes_ready_and_answers_through_its_route(
    kube: client.ApiClient, platform: KnativePlatform, world: World, namespace: str, models: str
) -> None:
    contract = f"{namespace}/mlp"
    world.deploy(model_file(namespace, "v1", models))
    assert world.until_finished(contract, "v1") == "succeeded"
    assert platform.observe(contract)["v1"].ready
    route = wait_for(lambda: routed(kube, namespace, {"v1": 100}), "the Route to route v1")
    assert wait_for(lambda: answer(route["status"]["url"]), "an answer via the Route") == "v1"
    assert platform.observe(contract)["v1"].replicas >= 1


def test_a_canary_moves_the_routes_traffic_between_revisions(
    kube: client.ApiClient, platform: KnativePlatform, world: World, namespace: str, models: str
) -> None:
    contract = f"{namespace}/mlp"
    world.deploy(model_file(namespace, "v1", models))
    assert world.until_finished(contract, "v1") == "succeeded"
    canary = {"policy": "canary", "steps": [50, 100], "hold_seconds": 30}
    world.deploy(model_file(namespace, "v2", models, canary, on_replacement=True))

    route = wait_for(lambda: world.reconciled(
        contract, lambda: routed(kube, namespace, {"v1": 50, "v2": 50})), "a 50/50 split")
    url = route["status"]["url"]
    assert {wait_for(lambda: answer(url), "an answer") for _ in range(40)} == {"v1", "v2"}
    for target in route["status"]["traffic"]:  # each tag reaches its own revision
        assert wait_for(lambda t=target: answer(t["url"]), "a tag's answer") == target["tag"]

    world.until_step(contract, "v2", 0)
    wait_for(lambda: routed(kube, namespace, {"v1": 0, "v2": 100}), "all traffic on v2")
    assert {wait_for(lambda: answer(url), "an answer") for _ in range(20)} == {"v2"}
    assert world.until_finished(contract, "v2") == "succeeded"  # v1 expires on replacement
    wait_for(lambda: world.reconciled(
        contract, lambda: labelled(kube, namespace, "services") == ["ff-mlp-v2"]),
        "v1's deletion")
    wait_for(lambda: routed(kube, namespace, {"v2": 100}), "the Route without v1")


def test_removing_the_contract_deletes_its_objects(
    kube: client.ApiClient, platform: KnativePlatform, world: World, namespace: str, models: str
) -> None:
    contract = f"{namespace}/mlp"
    world.deploy(model_file(namespace, "v1", models))
    wait_for(lambda: labelled(kube, namespace, "revisions"), "v1's revision")
    assert platform.apply(DesiredState(contract, {}, {}, ())) is True
    for plural in ("routes", "services", "revisions"):
        wait_for(lambda p=plural: labelled(kube, namespace, p) == [], f"no {plural} left")
    assert platform.observe(contract) == {}
