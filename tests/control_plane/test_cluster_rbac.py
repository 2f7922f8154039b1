"""knative/control-plane.yaml's ClusterRole against the code: it allows exactly the requests
KnativePlatform makes (recorded on the fake API server), nothing more, and is bound to the
processes that make them."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import pytest

from forestflow_control_plane.platforms.knative import GROUP, KnativePlatform
from forestflow_control_plane.policies.desired import nothing

from .fake_kube import FakeKube, Recorded
from .knative_support import IMAGE, REDIS, fraud
from .manifest_support import deployments, named


@dataclass(frozen=True)
class Access:
    """One authorization an API request needs, as RBAC names it."""

    verb: str
    group: str
    resource: str
    cluster_wide: bool


REQUEST_PATH = re.compile(
    r"/apis/(?P<group>[^/]+)/[^/]+(?:/namespaces/[^/]+(?P<namespaced>))?/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+))?"
)


def accesses(requests: list[Recorded]) -> set[Access]:
    """GET of a collection is list, of a name get; PATCH is patch, and also create when the
    object did not exist (the API server authorizes an apply that creates as a create:
    k8s.io/apiserver endpoints/handlers/patch.go); DELETE is delete."""
    needed: set[Access] = set()
    existing: set[str] = set()
    for request in requests:
        match = REQUEST_PATH.fullmatch(request.path)
        assert match, request.path
        if request.method == "GET":
            verbs = ["get" if match["name"] else "list"]
        elif request.method == "PATCH":
            verbs = ["patch"] if request.path in existing else ["patch", "create"]
            existing.add(request.path)
        elif request.method == "DELETE":
            verbs = ["delete"]
            existing.discard(request.path)
        else:
            pytest.fail(f"{request.method} {request.path}: no verb for it here")
        cluster_wide = match["namespaced"] is None
        needed |= {Access(v, match["group"], match["resource"], cluster_wide) for v in verbs}
    return needed


@pytest.fixture(scope="module")
def platform_accesses() -> set[Access]:
    """Everything KnativePlatform does to a contract: apply, observe, list contracts across
    namespaces, then delete it all."""
    kube = FakeKube(namespaces=("fraud",))
    state = fraud()
    with kube.serve() as api:
        platform = KnativePlatform(api, IMAGE, redis_url=REDIS)
        assert platform.apply(state)
        assert platform.observe(state.contract)
        assert platform.contracts() == {state.contract}
        assert platform.apply(nothing(state.contract))
    assert kube.names("services", "fraud") == kube.names("routes", "fraud") == []
    return accesses(kube.requests)


def granted() -> set[Access]:
    """The ClusterRole's rules, each (group, resource, verb) spelled out: no wildcards, no
    resource names, no non-resource URLs; bound cluster-wide, so every grant is."""
    role = named("ClusterRole", "forestflow-control-plane")
    grants = set()
    for rule in role["rules"]:
        assert rule.keys() == {"apiGroups", "resources", "verbs"}, rule
        for field in rule.values():
            assert "*" not in field, rule
        grants |= {
            Access(v, g, r, True)
            for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        }
    return grants


def allowed(access: Access, grants: set[Access]) -> bool:
    return replace(access, cluster_wide=True) in grants


def test_the_scenario_exercises_every_kind_of_request(platform_accesses: set[Access]) -> None:
    assert {a.verb for a in platform_accesses} == {"get", "list", "create", "patch", "delete"}
    assert any(a.cluster_wide for a in platform_accesses)


def test_the_cluster_role_allows_every_request_of_the_platform(
    platform_accesses: set[Access],
) -> None:
    grants = granted()
    refused = [a for a in platform_accesses if not allowed(a, grants)]
    assert refused == []


def test_the_cluster_role_grants_nothing_the_platform_does_not_use(
    platform_accesses: set[Access],
) -> None:
    assert {a.group for a in granted()} == {GROUP}
    assert granted() == {replace(a, cluster_wide=True) for a in platform_accesses}


def test_the_role_is_bound_cluster_wide_to_the_processes_that_call_kubernetes() -> None:
    binding = named("ClusterRoleBinding", "forestflow-control-plane")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
        "name": "forestflow-control-plane",
    }
    account = named("ServiceAccount", "forestflow-control-plane")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    for process in ("api", "worker"):  # they apply Knative objects
        pod = deployments()[process]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["name"], process
    mirror = deployments()["mirror"]["spec"]["template"]["spec"]
    assert mirror["automountServiceAccountToken"] is False
