"""What the knative platform may count on from a cluster, asserted the same way against the
fake API (test_knative_agreement.py) and against Kubernetes' and Knative's own servers
(e2e/knative/test_knative_cluster.py), so the fake cannot drift from the real thing.

Each check takes the platform, a `Cluster` to read objects from, and a desired state of the
shape it needs; on the real cluster `eventually` waits for Knative's controllers, on the
fake, which plays them synchronously, it must hold at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from forestflow_control_plane import names
from forestflow_control_plane.platforms.knative import KnativePlatform
from forestflow_control_plane.policies.desired import DesiredState

T = TypeVar("T")


class Cluster(Protocol):
    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def names(self, plural: str, namespace: str) -> list[str]: ...

    def eventually(self, check: Callable[[], T | None], what: str) -> T: ...


def served(route: dict[str, Any] | None) -> dict[str, int]:
    """tag -> percent in the Route's status, the versions with a share only."""
    traffic = ((route or {}).get("status") or {}).get("traffic") or []
    return {t["tag"]: t["percent"] for t in traffic if t.get("percent")}


def settled(route: dict[str, Any] | None, want: dict[str, int]) -> dict[str, Any] | None:
    """The Route, once Knative has programmed its current generation and serves `want`."""
    if route is None or served(route) != want:
        return None
    status = route["status"]
    ready = {c["type"] for c in status.get("conditions") or [] if c["status"] == "True"}
    current = status.get("observedGeneration") == route["metadata"]["generation"]
    return route if current and {"Ready", "AllTrafficAssigned"} <= ready else None


def serving(
    platform: KnativePlatform, cluster: Cluster, state: DesiredState, want: dict[str, int]
) -> dict[str, Any]:
    """Apply `state`, again while Knative catches up (as the reconcile does), until the
    contract's Route serves `want` for its current generation; that Route."""
    namespace, name = names.split_contract(state.contract)

    def done() -> dict[str, Any] | None:
        platform.apply(state)
        return settled(cluster.get("routes", namespace, name), want)

    return cluster.eventually(done, f"the Route of {state.contract} to serve {want}")


def knatives_own_routes_survive_applies(
    platform: KnativePlatform, cluster: Cluster, state: DesiredState, want: dict[str, int]
) -> None:
    """Knative makes a Route per Service, with the Service's labels (ours too); ten applies
    of the contract leave every one of them in place, cluster-local, and the contract's."""
    namespace, _ = names.split_contract(state.contract)
    serving(platform, cluster, state, want)
    services = [names.service_name(state.contract, v.version) for v in state.variants]
    uids = cluster.eventually(lambda: {
        name: route["metadata"]["uid"] for name in services
        if (route := cluster.get("routes", namespace, name)) is not None
    } or None, "Knative's Route of each Service")
    assert set(uids) == set(services)
    for _ in range(10):
        platform.apply(state)
    for name in services:
        route = cluster.get("routes", namespace, name)
        assert route is not None and route["metadata"]["uid"] == uids[name]
        assert route["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert served(serving(platform, cluster, state, want)) == want


def a_second_apply_changes_nothing(
    platform: KnativePlatform, cluster: Cluster, state: DesiredState, want: dict[str, int],
    quiet: Callable[[], dict[tuple[str, str], str]],
) -> None:
    """Once the contract is served, applying the same state again says it changed nothing and
    moves no resourceVersion. `quiet`: the resource versions once no controller writes."""
    serving(platform, cluster, state, want)
    before = quiet()
    assert platform.apply(state) is False
    assert platform.apply(state) is False
    assert quiet() == before


def an_unready_version_is_no_target(
    platform: KnativePlatform, cluster: Cluster, state: DesiredState, stuck: str,
    want: dict[str, int],
) -> None:
    """`stuck` (its pod fits no node) fails Unschedulable and gets no Route target, share or
    tag, while the others serve `want` between them."""
    namespace, _ = names.split_contract(state.contract)
    route = serving(platform, cluster, state, want)
    assert stuck not in {t.get("tag") for t in route["spec"]["traffic"]}
    service = cluster.get("services", namespace, names.service_name(state.contract, stuck))
    assert service is not None
    revision = service["spec"]["template"]["metadata"]["name"]

    def failed() -> str | None:
        found = cluster.get("revisions", namespace, revision) or {}
        for condition in (found.get("status") or {}).get("conditions") or []:
            if condition["type"] == "Ready" and condition["status"] == "False":
                return str(condition.get("reason"))
        return None

    assert cluster.eventually(failed, f"revision {revision} to fail") == "Unschedulable"
    assert platform.observe(state.contract)[stuck].failure is not None
