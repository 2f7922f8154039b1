"""The knative platform through the real `kubernetes` client, against the fake API server in
fake_kube.py (real HTTP on 127.0.0.1); rollouts with real Redis drive it end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from redis import Redis

from forestflow_control_plane.knative.admission import InvalidObjectError
from forestflow_control_plane.knative.render import kn_commands, manifests_yaml
from forestflow_control_plane.knative.resources import make_objects
from forestflow_control_plane.platforms.base import PlatformError, VariantStatus
from forestflow_control_plane.platforms.knative import APPLY_PATCH, KnativePlatform
from forestflow_control_plane.policies.desired import DesiredState, DesiredVariant, desired_state
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import Rollouts, StepCall
from forestflow_control_plane.state.store import Store
from tests.support import REPO, free_port

from .fake_kube import FakeKube
from .test_golden import GOLDEN, snapshot
from .test_rollouts import Clock, variant

IMAGE = "ghcr.io/forestflow/runtime:0.1.0"
KN_GOLDEN = REPO / "knative" / "golden" / "fraud-scoring.kn.sh"
SERVICES = ["ff-scoring-v1", "ff-scoring-v2", "ff-scoring-v3"]


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(namespaces=("fraud", "examples"))


@pytest.fixture
def api(kube: FakeKube) -> Iterator[client.ApiClient]:
    with kube.serve() as api:
        yield api

REDIS = "redis://redis.forestflow.svc.cluster.local:6379/0"
ENV = {"FF_REDIS_URL": REDIS}


@pytest.fixture
def platform(api: client.ApiClient) -> KnativePlatform:
    return KnativePlatform(api, IMAGE, redis_url=REDIS)


def fraud() -> DesiredState:
    """fraud/scoring: v1 90 %, v2 10 %, v3 a shadow (the golden contract)."""
    return desired_state(snapshot())


def versions(kube: FakeKube) -> dict[str, str]:
    return {
        f"{plural}/{name}": kube.get(plural, "fraud", name)["metadata"]["resourceVersion"]
        for plural in ("services", "routes")
        for name in kube.names(plural, "fraud")
    }


def traffic(kube: FakeKube, namespace: str, name: str) -> list[tuple[str, int]]:
    route = kube.get("routes", namespace, name)
    assert route is not None, f"no Route {namespace}/{name}"
    return [(t["tag"], t["percent"]) for t in route["spec"]["traffic"]]


def test_apply_creates_the_services_then_the_route_by_server_side_apply(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    assert platform.apply(fraud()) is True
    patches = [r for r in kube.requests if r.method == "PATCH"]
    base = "/apis/serving.knative.dev/v1/namespaces/fraud"
    assert [r.path for r in patches] == [
        *(f"{base}/services/{name}" for name in SERVICES), f"{base}/routes/scoring"
    ]
    for request in patches:
        assert request.content_type == APPLY_PATCH
        assert request.query == {"fieldManager": "forestflow", "force": "true"}
    paths = [r.path for r in kube.requests]
    route_at = paths.index(f"{base}/routes/scoring")
    route = make_objects(fraud(), IMAGE, ENV)[-1]
    for target in route["spec"]["traffic"]:
        assert paths.index(f"{base}/revisions/{target['revisionName']}") < route_at
    for want in make_objects(fraud(), IMAGE, ENV):
        got = kube.get(f"{want['kind'].lower()}s", "fraud", want["metadata"]["name"])
        assert got is not None
        assert got["spec"] == want["spec"]
        assert got["metadata"]["labels"] == want["metadata"]["labels"]
        assert [m["manager"] for m in got["metadata"]["managedFields"]] == ["forestflow"]
    assert traffic(kube, "fraud", "scoring") == [("v1", 90), ("v2", 10)]


def test_a_repeat_apply_changes_nothing(kube: FakeKube, platform: KnativePlatform) -> None:
    platform.apply(fraud())
    before = versions(kube)
    assert platform.apply(fraud()) is False
    assert versions(kube) == before
    assert all(kube.get("services", "fraud", n)["metadata"]["generation"] == 1 for n in SERVICES)


def revisions_of(state: DesiredState) -> list[str]:
    return [
        o["spec"]["template"]["metadata"]["name"]
        for o in make_objects(state, IMAGE, ENV)
        if o["kind"] == "Service"
    ]


def scaled(state: DesiredState, version: str = "v2") -> DesiredState:
    """`state` with `version` allowed twice the replicas: a change to its Service alone."""
    variants = tuple(
        DesiredVariant(v.version, {**v.spec, "scaling": {**v.spec["scaling"], "max_replicas": 8}})
        if v.version == version else v
        for v in state.variants
    )
    return replace(state, variants=variants)


@pytest.mark.parametrize(
    ("change", "want_changed"),
    [
        (lambda s: replace(s, traffic={"v1": 50, "v2": 50}), {"routes/scoring"}),
        (lambda s: replace(s, sticky_header="x-account"), {"routes/scoring"}),
        # A new template is a new revision, which the Route must then name.
        (scaled, {"services/ff-scoring-v2", "routes/scoring"}),
    ],
    ids=["traffic", "sticky-header", "scaling"],
)
def test_a_changed_state_updates_only_what_changed(
    kube: FakeKube,
    platform: KnativePlatform,
    change: Callable[[DesiredState], DesiredState],
    want_changed: set[str],
) -> None:
    platform.apply(fraud())
    before = versions(kube)
    count = len(kube.writes())
    assert platform.apply(change(fraud())) is True
    after = versions(kube)
    assert {key for key in after if after[key] != before[key]} == want_changed
    assert len(kube.writes()) - count == 4  # every object applied, only the changed ones moved


def test_an_expired_variant_is_deleted_once_the_route_no_longer_targets_it(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    platform.apply(fraud())
    state = fraud()
    without_v1 = replace(state, traffic={"v2": 100}, variants=state.variants[1:])
    count = len(kube.requests)
    assert platform.apply(without_v1) is True
    writes = [(r.method, r.path.rsplit("/", 2)[-2:]) for r in kube.requests[count:]
              if r.method != "GET"]
    assert writes[-2:] == [("PATCH", ["routes", "scoring"]), ("DELETE", ["services", SERVICES[0]])]
    assert kube.names("services", "fraud") == SERVICES[1:]
    assert "ff-scoring-v1-00001" not in kube.names("revisions", "fraud")
    assert traffic(kube, "fraud", "scoring") == [("v2", 100)]


def test_no_variant_left_deletes_the_route_then_the_services(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    platform.apply(fraud())
    count = len(kube.requests)
    assert platform.apply(replace(fraud(), traffic={}, variants=())) is True
    deletes = [r.path.rsplit("/", 2)[-2:] for r in kube.requests[count:] if r.method == "DELETE"]
    assert deletes == [["routes", "scoring"], *(["services", name] for name in SERVICES)]
    assert kube.names("services", "fraud") == kube.names("routes", "fraud") == []


def test_contracts_are_read_across_namespaces_from_services_and_routes(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    assert platform.contracts() == set()
    platform.apply(fraud())
    platform.apply(replace(fraud(), contract="examples/mlp"))
    assert platform.contracts() == {"fraud/scoring", "examples/mlp"}
    assert {r.path for r in kube.requests[-2:]} == {
        "/apis/serving.knative.dev/v1/services", "/apis/serving.knative.dev/v1/routes"
    }
    assert {r.query["labelSelector"] for r in kube.requests[-2:]} == {"forestflow.dev/contract"}
    platform.apply(replace(fraud(), traffic={}, variants=()))
    assert platform.contracts() == {"examples/mlp"}


def ready(kube: FakeKube, service: str, replicas: int, ok: bool = True) -> None:
    """What Knative's controller writes once a revision serves (or fails to)."""
    obj = kube.get("services", "fraud", service)
    assert obj is not None
    revision = obj["spec"]["template"]["metadata"]["name"]
    kube.set_status("services", "fraud", service, {
        "observedGeneration": obj["metadata"]["generation"],
        "latestCreatedRevisionName": revision,
        **({"latestReadyRevisionName": revision} if ok else {}),
        "conditions": [{"type": "Ready", "status": "True" if ok else "False"}],
    })
    kube.set_status("revisions", "fraud", revision, {"actualReplicas": replicas})


def test_observe_reads_readiness_and_replicas_from_status(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    platform.apply(fraud())
    assert platform.observe("fraud/scoring") == {
        v: VariantStatus(v, ready=False, replicas=0) for v in ("v1", "v2", "v3")
    }
    ready(kube, "ff-scoring-v1", replicas=2)
    ready(kube, "ff-scoring-v2", replicas=0, ok=False)
    ready(kube, "ff-scoring-v3", replicas=1)
    platform.apply(scaled(fraud(), "v3"))  # v3's spec moves on: its status is now stale
    assert platform.observe("fraud/scoring") == {
        "v1": VariantStatus("v1", ready=True, replicas=2),
        "v2": VariantStatus("v2", ready=False, replicas=0),
        "v3": VariantStatus("v3", ready=False, replicas=1),
    }
    assert platform.replica_urls("fraud/scoring", "v1") == []
    with platform.trial_replica(make_objects(fraud(), IMAGE)[0]) as url:
        assert url is None


def test_an_invalid_object_is_refused_before_any_request(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    with pytest.raises(InvalidObjectError, match=r"Route fraud/scoring: spec\.traffic"):
        platform.apply(replace(fraud(), traffic={"v1": 90, "v2": 20}))
    assert kube.requests == []


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


def test_a_route_waits_for_its_revisions_and_is_left_alone_without_them() -> None:
    kube = FakeKube(namespaces=("fraud",), controller=False)  # Knative's controller is down
    with kube.serve() as api, pytest.raises(
        PlatformError, match=rf"revision {revisions_of(fraud())[0]} did not appear within 0\.3s"
    ):
        KnativePlatform(api, IMAGE, revision_wait_s=0.3, redis_url=REDIS).apply(fraud())
    assert kube.names("services", "fraud") == SERVICES
    assert kube.names("routes", "fraud") == []


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

    canary = {"policy": "canary", "steps": [10, 50, 100], "hold_seconds": 30}
    register(store, variant("v2", canary, on_replacement=True), who="t")
    rollouts.start("examples/mlp", "v2")
    assert traffic(kube, "examples", "mlp") == [("v1", 90), ("v2", 10)]
    for want in ([("v1", 50), ("v2", 50)], [("v1", 0), ("v2", 100)], [("v2", 100)]):
        clock.now = scheduled[-1].at
        rollouts.advance("examples/mlp", "v2", scheduled[-1].token)
        assert traffic(kube, "examples", "mlp") == want
    assert kube.names("services", "examples") == ["ff-mlp-v2"]  # v1 expired on replacement


def test_dry_run_views_match_golden() -> None:
    objects = make_objects(fraud(), IMAGE)
    assert manifests_yaml(objects) == GOLDEN.read_text()
    text = "\n\n".join(kn_commands(objects)) + "\n"
    if os.environ.get("FF_UPDATE_GOLDEN"):
        KN_GOLDEN.write_text(text)
    assert text == KN_GOLDEN.read_text()


def test_kn_commands_refuse_what_kn_cannot_say() -> None:
    service = make_objects(fraud(), IMAGE)[0]
    service["spec"]["template"]["spec"]["volumes"] = []
    with pytest.raises(ValueError, match=r"ff-scoring-v1: kn cannot express \['volumes'\]"):
        kn_commands([service])


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


def test_runtimes_get_the_redis_url_and_without_one_nothing_that_needs_it_is_applied(
    kube: FakeKube, api: client.ApiClient
) -> None:
    KnativePlatform(api, IMAGE, redis_url=REDIS).apply(fraud())
    service = kube.get("services", "fraud", "ff-scoring-v1")
    (container,) = service["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FF_REDIS_URL"] == REDIS and "FF_PAYLOAD_SAMPLE_RATE" in env  # v3 is a shadow

    sent = len(kube.requests)
    with pytest.raises(PlatformError, match="set FF_RUNTIME_REDIS_URL"):
        KnativePlatform(api, IMAGE).apply(fraud())
    assert len(kube.requests) == sent
