"""KnativePlatform.apply through the real `kubernetes` client against the fake API server in
fake_kube.py (real HTTP on 127.0.0.1): server-side apply in order, only what changed,
deletes after the Route lets go, and nothing sent that a cluster would refuse."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from kubernetes import client

from forestflow_control_plane.knative.admission import InvalidObjectError
from forestflow_control_plane.knative.resources import make_objects
from forestflow_control_plane.platforms.base import PlatformError
from forestflow_control_plane.platforms.knative import APPLY_PATCH, KnativePlatform
from forestflow_control_plane.policies.desired import DesiredState

from . import knative_support as support
from .fake_kube import FakeKube
from .knative_support import ENV, IMAGE, REDIS, SERVICES, fraud, scaled, traffic

kube, api, platform = support.kube, support.api, support.platform


def versions(kube: FakeKube) -> dict[str, str]:
    return {
        f"{plural}/{name}": kube.get(plural, "fraud", name)["metadata"]["resourceVersion"]
        for plural in ("services", "routes")
        for name in kube.names(plural, "fraud")
    }


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
    last_service_at = paths.index(f"{base}/services/{SERVICES[-1]}")
    assert f"{base}/revisions" in paths[last_service_at:route_at]  # which revisions are Ready
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


@pytest.mark.parametrize(
    ("change", "want_changed"),
    [
        (lambda s: replace(s, traffic={"v1": 50, "v2": 50}), {"routes/scoring"}),
        # A new template is a new revision, which the Route must then name.
        (scaled, {"services/ff-scoring-v2", "routes/scoring"}),
    ],
    ids=["traffic", "scaling"],
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


def test_a_sticky_header_is_refused_before_any_request(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    with pytest.raises(PlatformError, match=r"routing\.sticky_header \(x-account\) needs the "
                       "local platform's gateway"):
        platform.apply(replace(fraud(), sticky_header="x-account"))
    assert kube.requests == []


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


def test_a_retired_service_stays_while_the_routes_status_still_names_it(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    """The Route's status is what its ingress serves: a Service it still names keeps taking
    requests until Knative has moved the ingress, so it is deleted on a later apply."""
    platform.apply(fraud())
    v2 = revisions_of(fraud())[1]
    kube.program_routes = False
    state = fraud()
    without_v1 = replace(state, traffic={"v2": 100}, variants=state.variants[1:])
    platform.apply(without_v1)
    assert kube.names("services", "fraud") == SERVICES
    assert traffic(kube, "fraud", "scoring") == [("v2", 100)]
    kube.set_status("routes", "fraud", "scoring", {"traffic": [
        {"revisionName": v2, "percent": 100},
    ]})
    assert platform.apply(without_v1) is True
    assert kube.names("services", "fraud") == SERVICES[1:]


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


def test_an_invalid_object_is_refused_before_any_request(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    with pytest.raises(InvalidObjectError, match=r"Route fraud/scoring: spec\.traffic"):
        platform.apply(replace(fraud(), traffic={"v1": 90, "v2": 20}))
    assert kube.requests == []


def test_the_route_names_only_ready_revisions_and_waits_for_one() -> None:
    """Knative refuses a whole Route while any target is not Ready: a version still loading
    gets no target (its share goes to the others), and with none Ready the Route waits."""
    kube = FakeKube(namespaces=("fraud",), ready_revisions=False)
    v1, v2, _ = revisions_of(fraud())
    with kube.serve() as api:
        platform = KnativePlatform(api, IMAGE, redis_url=REDIS)
        platform.apply(fraud())
        assert kube.names("services", "fraud") == SERVICES
        assert kube.get("routes", "fraud", "scoring") is None
        kube.set_status("revisions", "fraud", v2, {"conditions": [
            {"type": "Ready", "status": "True"}
        ]})
        assert platform.apply(fraud()) is True
        assert traffic(kube, "fraud", "scoring") == [("v2", 100)]
        kube.set_status("revisions", "fraud", v1, {"conditions": [
            {"type": "Ready", "status": "True"}
        ]})
        assert platform.apply(fraud()) is True
        assert traffic(kube, "fraud", "scoring") == [("v1", 90), ("v2", 10)]


def test_knatives_own_routes_of_each_service_are_left_alone(
    kube: FakeKube, platform: KnativePlatform
) -> None:
    """Knative makes a Route per Service and copies the Service's labels onto it, ours too:
    they are not the contract's Route, so no apply may delete them."""
    for _ in range(3):
        platform.apply(fraud())
    assert kube.names("routes", "fraud") == sorted(["scoring", *SERVICES])
    assert not [r for r in kube.requests if r.method == "DELETE"]
    assert platform.apply(fraud()) is False


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
