"""The knative platform through the real `kubernetes` client, against the fake API server in
fake_kube.py (real HTTP on 127.0.0.1): what it observes, how it names a failure, the fake held
to the API server's own answers, the kubeconfig it reads; rollouts with real Redis drive it
end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from redis import Redis

from forestflow_control_plane.knative.resources import make_objects
from forestflow_control_plane.platforms.base import PlatformError, VariantStatus
from forestflow_control_plane.platforms.knative import APPLY_PATCH, KnativePlatform
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import Rollouts, StepCall
from forestflow_control_plane.state.store import Store
from tests.support import free_port

from . import knative_support as support
from .fake_kube import FakeKube
from .knative_support import ENV, IMAGE, REDIS, fraud, scaled, traffic
from .test_rollouts import Clock, variant

kube, api, platform = support.kube, support.api, support.platform


def ready(kube: FakeKube, service: str, replicas: int, ok: bool = True) -> str:
    """What Knative's controller writes once a revision serves (or fails to); its name."""
    obj = kube.get("services", "fraud", service)
    assert obj is not None
    revision = obj["spec"]["template"]["metadata"]["name"]
    kube.set_status("services", "fraud", service, {
        "observedGeneration": obj["metadata"]["generation"],
        "latestCreatedRevisionName": revision,
        **({"latestReadyRevisionName": revision} if ok else {}),
        "conditions": [{"type": "Ready", "status": "True" if ok else "False"}],
    })
    condition = {"type": "Ready", "status": "True"} if ok else {
        "type": "Ready", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": "Initial scale was never achieved",
    }
    kube.set_status("revisions", "fraud", revision, {
        "actualReplicas": replicas, "conditions": [condition],
    })
    return revision


def test_observe_and_served_read_readiness_replicas_failures_and_the_served_split(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    platform.apply(fraud())
    assert platform.observe("fraud/scoring") == {
        v: VariantStatus(v, ready=False, replicas=0) for v in ("v1", "v2", "v3")
    }
    v1 = ready(kube, "ff-scoring-v1", replicas=2)
    v2 = ready(kube, "ff-scoring-v2", replicas=0, ok=False)
    ready(kube, "ff-scoring-v3", replicas=1)
    platform.apply(scaled(fraud(), "v3"))  # v3's spec moves on: its status is now stale
    kube.set_status("routes", "fraud", "scoring", {"traffic": [
        {"revisionName": v1, "percent": 90, "tag": "v1"},
        {"revisionName": v2, "percent": 10, "tag": "v2"},
    ]})
    assert platform.observe("fraud/scoring") == {
        "v1": VariantStatus("v1", ready=True, replicas=2),
        "v2": VariantStatus("v2", ready=False, replicas=0, failure=(
            f"revision {v2} failed: ProgressDeadlineExceeded: Initial scale was never achieved"
        )),
        "v3": VariantStatus("v3", ready=False, replicas=1),
    }
    assert platform.served("fraud/scoring") == {"v1": 90, "v2": 10}
    assert platform.replica_urls("fraud/scoring", "v1") == []
    with platform.trial_replica(make_objects(fraud(), IMAGE)[0]) as url:
        assert url is None


def test_api_errors_name_the_request_the_object_and_the_status(
    kube: FakeKube, api: client.ApiClient, platform: KnativePlatform
) -> None:
    nowhere = replace(fraud(), contract="nowhere/scoring")
    with pytest.raises(PlatformError, match=(
        r'apply Service nowhere/ff-scoring-v1: 404 Not Found: namespaces "nowhere" not found'
    )) as caught:
        platform.apply(nowhere)
    assert caught.value.status == 404

    kube.deny("routes", "fraud", "scoring", "validation failed: quota exceeded")
    with pytest.raises(PlatformError, match=(
        r"apply Route fraud/scoring: 400 Bad Request: admission webhook .* denied the "
        r"request: validation failed: quota exceeded"
    )):
        platform.apply(fraud())

    down = f"http://127.0.0.1:{free_port()}"
    with client.ApiClient(client.Configuration(host=down)) as unreachable, pytest.raises(
        PlatformError, match=rf"list services in fraud .*: the Kubernetes API at {down}"
    ) as caught:
        KnativePlatform(unreachable, IMAGE, redis_url=REDIS).apply(fraud())
    assert caught.value.status is None


def test_the_fake_answers_as_an_api_server(kube: FakeKube, api: client.ApiClient) -> None:
    """What the platform's tests rely on: refusals the real API server makes, in its words."""
    objects = client.CustomObjectsApi(api)
    route = make_objects(fraud(), IMAGE, ENV)[-1]

    def patch(body: dict[str, Any], content_type: str = APPLY_PATCH, **options: Any) -> Any:
        return objects.patch_namespaced_custom_object(
            "serving.knative.dev", "v1", "fraud", "routes", "scoring", body,
            _content_type=content_type, **options,
        )

    def refusal(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
        with pytest.raises(ApiException) as caught:
            call()
        return caught.value.status, yaml.safe_load(caught.value.body)

    status, body = refusal(lambda: patch(route, "application/merge-patch+json"))
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    status, body = refusal(lambda: patch(route))
    assert (status, body["reason"]) == (422, "Invalid") and "fieldManager" in body["message"]
    bad = {**route, "spec": {"traffic": [{"revisionName": "r", "percent": "all"}]}}
    status, body = refusal(lambda: patch(bad, field_manager="t"))
    assert (status, body["kind"], body["reason"]) == (422, "Status", "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.traffic[0].percent"

    patch(route, field_manager="forestflow")  # 201 Created, whose body the client drops
    assert kube.get("routes", "fraud", "scoring")["metadata"]["generation"] == 1
    mine = {**route, "metadata": {**route["metadata"], "labels": {"team": "fraud"}}}
    patch(mine, field_manager="kubectl")  # a second manager may co-own a field...
    retarget = {**mine, "spec": {"traffic": [{**route["spec"]["traffic"][0], "percent": 100}]}}
    status, body = refusal(lambda: patch(retarget, field_manager="kubectl"))
    assert (status, body["reason"]) == (409, "Conflict")  # ...not take one without force
    assert body["details"]["causes"][0]["field"] == ".spec.traffic"
    taken = patch(retarget, field_manager="kubectl", force=True)
    assert taken["metadata"]["generation"] == 2
    assert taken["metadata"]["labels"] == {"forestflow.dev/contract": "fraud.scoring",
                                           "team": "fraud"}
    status, body = refusal(lambda: objects.get_namespaced_custom_object(
        "serving.knative.dev", "v1", "fraud", "routes", "missing"))
    assert (status, body["message"]) == (404, 'routes.serving.knative.dev "missing" not found')


def test_rollouts_move_the_routes_traffic_as_the_policy_says(
    redis: Redis, kube: FakeKube, platform: KnativePlatform
) -> None:
    clock = Clock()
    scheduled: list[StepCall] = []
    store = Store(redis, clock=clock)
    rollouts = Rollouts(store, platform, scheduled.append, clock=clock)
    register(store, variant("v1"), who="t")
    rollouts.start("examples/mlp", "v1")
    assert traffic(kube, "examples", "mlp") == [("v1", 100)]
    assert store.get("examples/mlp").contract.rollout.status.value == "running"
    clock.now = scheduled[-1].at  # immediate, but done only once the Route serves it
    rollouts.advance("examples/mlp", "v1", scheduled[-1].token)
    assert store.get("examples/mlp").contract.rollout.status.value == "succeeded"

    canary = {"policy": "canary", "steps": [10, 50, 100], "hold_seconds": 30}
    register(store, variant("v2", canary, on_replacement=True), who="t")
    rollouts.start("examples/mlp", "v2")
    assert traffic(kube, "examples", "mlp") == [("v1", 90), ("v2", 10)]
    for want in ([("v1", 50), ("v2", 50)], [("v1", 0), ("v2", 100)], [("v2", 100)]):
        clock.now = scheduled[-1].at
        rollouts.advance("examples/mlp", "v2", scheduled[-1].token)
        assert traffic(kube, "examples", "mlp") == want
    assert kube.names("services", "examples") == ["ff-mlp-v2"]  # v1 expired on replacement


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "%s"}}]
users: [{name: tester, user: {token: t0ken}}]
contexts: [{name: fake, context: {cluster: fake, user: tester}}]
current-context: fake
"""
PLATFORM_FOR = """
from forestflow_control_plane.composition import Parts
from forestflow_control_plane.settings import Settings
print(Parts(Settings.from_env()).platform.observe("fraud/scoring"))
"""


def test_the_knative_platform_reads_the_kubeconfig_context(
    kube: FakeKube, api: client.ApiClient, tmp_path: Path
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(KUBECONFIG % api.configuration.host)
    env = {**os.environ, "KUBECONFIG": str(config), "REDIS_URL": "redis://unused",
           "FF_PLATFORM": "knative", "FF_KUBE_CONTEXT": "fake"}
    env.pop("KUBERNETES_SERVICE_HOST", None)

    def run(**overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", PLATFORM_FOR], env={**env, **overrides},
                              capture_output=True, text=True, timeout=60)

    done = run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{}"
    assert kube.requests[-1].path.endswith("/namespaces/fraud/services")
    done = run(FF_KUBE_CONTEXT="elsewhere")
    assert done.returncode != 0
    assert "SettingsError: FF_KUBE_CONTEXT: no usable Kubernetes credentials" in done.stderr
