"""What Kubernetes' own API server and Knative's own controllers say of the objects the
knative platform applies (issue 12's findings). No request reaches a model here: kwok's
pods never run a container, so each test asserts the cluster's own record: Route status,
its conditions, observed generations, Revision conditions, resource versions, and which
objects exist. The platform runs as the ServiceAccount knative/control-plane.yaml binds."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import urllib3
import yaml
from kubernetes import client, watch
from redis import Redis

from forestflow_control_plane.knative.annotations import GROUP, VERSION
from forestflow_control_plane.platforms.knative import KnativePlatform
from forestflow_control_plane.policies.desired import DesiredState, DesiredVariant
from forestflow_control_plane.rollouts.deploys import specs_of
from forestflow_control_plane.spec.model_file import ModelFile
from tests.control_plane import knative_agreement as agreement

from .control import (
    Workers,
    enqueue_deploy,
    finished,
    rollout,
    spec,
    states,
    traffic,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)
T = TypeVar("T")
MODELS = "http://models.invalid"  # never fetched: kwok runs no container
REPO = Path(__file__).resolve().parents[2]


def objects(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def get(kube: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        found = objects(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], found)


def listed(kube: client.ApiClient, namespace: str, plural: str) -> list[dict[str, Any]]:
    answer = objects(kube).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    return list(cast(dict[str, Any], answer)["items"])


def condition(obj: dict[str, Any] | None, kind: str) -> str | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return str(c["status"])
    return None


def state(*models: ModelFile, traffic: dict[str, int]) -> DesiredState:
    """The desired state of a contract serving `models`' variants with `traffic`."""
    contract_spec = specs_of(models[0])[0]
    variants = tuple(DesiredVariant(m.variant.version, specs_of(m)[1]) for m in models)
    return DesiredState(models[0].contract.name, contract_spec, traffic, variants)


@pytest.fixture
def contract(namespace: str) -> str:
    return f"{namespace}/mlp"


def model(namespace: str, version: str, **variant: Any) -> ModelFile:
    return spec(namespace, version, MODELS, variant=variant) if variant else spec(
        namespace, version, MODELS
    )


class Real:
    """The test cluster, read as the test's own admin; `eventually` waits for Knative."""

    def __init__(self, kube: client.ApiClient, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return get(self.kube, namespace, plural, name)

    def names(self, plural: str, namespace: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in listed(self.kube, namespace, plural))

    def eventually(self, check: Callable[[], T | None], what: str) -> T:
        return wait_for(check, what)

    def quiet(self) -> dict[tuple[str, str], str]:
        """Resource versions once Knative has stopped writing status for a second."""

        def versions() -> dict[tuple[str, str], str]:
            return {
                (plural, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                for plural in ("services", "routes")
                for o in listed(self.kube, self.namespace, plural)
            }

        def settled() -> dict[tuple[str, str], str] | None:
            seen = versions()
            time.sleep(1)
            return seen if versions() == seen else None

        return wait_for(settled, "Knative to stop writing status")


def test_knatives_own_routes_survive_applies(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str
) -> None:
    desired = state(model(namespace, "v1"), model(namespace, "v2"), traffic={"v1": 50, "v2": 50})
    agreement.knatives_own_routes_survive_applies(
        platform, Real(kube, namespace), desired, {"v1": 50, "v2": 50}
    )


def test_a_second_apply_changes_nothing(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str
) -> None:
    desired = state(model(namespace, "v1"), model(namespace, "v2"), traffic={"v1": 70, "v2": 30})
    real = Real(kube, namespace)
    agreement.a_second_apply_changes_nothing(
        platform, real, desired, {"v1": 70, "v2": 30}, real.quiet
    )


def test_an_unready_version_is_no_target(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str
) -> None:
    stuck = model(namespace, "v2", resources={"cpu": "500"})  # more than the one node has
    desired = state(model(namespace, "v1"), stuck, traffic={"v1": 90, "v2": 10})
    agreement.an_unready_version_is_no_target(
        platform, Real(kube, namespace), desired, "v2", {"v1": 100}
    )


class Events:
    """Every watch event of one kind in the namespace, in the API server's order, from a
    thread; `stop` ends the watch."""

    def __init__(self, kube: client.ApiClient, namespace: str, plural: str) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._watch = watch.Watch()
        self._thread = threading.Thread(
            target=self._run, args=(kube, namespace, plural), daemon=True
        )
        self._thread.start()

    def _run(self, kube: client.ApiClient, namespace: str, plural: str) -> None:
        stream = self._watch.stream(
            objects(kube).list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
            timeout_seconds=300,
        )
        with contextlib.suppress(urllib3.exceptions.ProtocolError):  # stopped mid-read
            for event in stream:
                self.seen.append((event["type"], event["object"]))

    def stop(self) -> list[tuple[str, dict[str, Any]]]:
        self._watch.stop()
        self._thread.join(10)
        return list(self.seen)


@pytest.fixture
def route_events(kube: client.ApiClient, namespace: str) -> Iterator[Events]:
    events = Events(kube, namespace, "routes")
    yield events
    events.stop()


def test_a_retired_service_goes_only_after_the_routes_status_stops_naming_it(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str
) -> None:
    v1, v2 = model(namespace, "v1"), model(namespace, "v2")
    both = state(v1, v2, traffic={"v1": 50, "v2": 50})
    agreement.serving(platform, Real(kube, namespace), both, {"v1": 50, "v2": 50})
    routes, services = Events(kube, namespace, "routes"), Events(kube, namespace, "services")
    alone = state(v1, traffic={"v1": 100})
    wait_for(lambda: not platform.apply(alone) and get(
        kube, namespace, "services", "ff-mlp-v2") is None, "v2's Service to be deleted")
    route_seen, service_seen = routes.stop(), services.stop()
    # The API server's resource versions of one etcd are its revisions: one order for both.
    deleted_at = next(int(o["metadata"]["resourceVersion"]) for kind, o in service_seen
                      if kind == "DELETED" and o["metadata"]["name"] == "ff-mlp-v2")
    moved_at = next(
        int(o["metadata"]["resourceVersion"]) for _, o in route_seen
        if o["metadata"]["name"] == "mlp" and "v2" not in {
            t.get("tag") for t in (o.get("status") or {}).get("traffic") or []
        }
    )
    assert moved_at < deleted_at
    assert agreement.settled(get(kube, namespace, "routes", "mlp"), {"v1": 100})


def test_a_version_that_never_becomes_ready_holds_up_no_traffic_change_of_the_others(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str
) -> None:
    v1, v3 = model(namespace, "v1"), model(namespace, "v3")
    # More CPU than the cluster's one (fake) node has: its pod is never scheduled.
    stuck = model(namespace, "v2", resources={"cpu": "500"})
    real = Real(kube, namespace)
    for split in ({"v1": 50, "v3": 50}, {"v1": 20, "v3": 80}):
        agreement.serving(platform, real, state(v1, stuck, v3, traffic={**split, "v2": 0}), split)
    service = get(kube, namespace, "services", "ff-mlp-v2")
    assert service is not None
    revision = service["spec"]["template"]["metadata"]["name"]
    assert condition(get(kube, namespace, "revisions", revision), "Ready") != "True"
    # Even with a share of its own, the unready version is not a target: the others carry it.
    with_share = state(v1, stuck, v3, traffic={"v1": 45, "v2": 10, "v3": 45})
    agreement.serving(platform, real, with_share, {"v1": 50, "v3": 50})


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


def test_a_candidate_that_never_becomes_ready_fails_its_rollout_with_the_reason(
    kube: client.ApiClient, redis: Redis, namespace: str, contract: str, workers: Workers
) -> None:
    assert deployed(redis, workers, model(namespace, "v1")) == "succeeded"
    stuck = spec(namespace, "v2", MODELS, rollout=canary([10, 100]),
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
    route_events: Events,
) -> None:
    assert deployed(redis, workers, model(namespace, "v1")) == "succeeded"
    v2 = spec(namespace, "v2", MODELS, rollout=canary([10, 50, 100]))
    assert deployed(redis, workers, v2) == "succeeded"
    settled_route = wait_for(lambda: agreement.settled(get(kube, namespace, "routes", "mlp"),
                                              {"v2": 100}), "v2 at 100 %")
    assert settled_route is not None
    seen = [o for _, o in route_events.stop() if o["metadata"]["name"] == "mlp"]
    specs, statuses = [], []
    for route in seen:
        asked = {t["tag"]: t["percent"] for t in route["spec"]["traffic"] if t["percent"]}
        if not specs or specs[-1] != asked:
            assert not specs or specs[-1] in statuses, (
                f"the spec moved to {asked} before the Route served {specs[-1]}"
            )
            specs.append(asked)
        statuses.append(agreement.served(route))
    assert specs == [{"v1": 100}, {"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}, {"v2": 100}]


NAME = "n" * 32  # the longest contract name model.yaml takes


def test_names_at_the_limits_apply_and_one_past_them_is_refused_by_dry_run(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str, tmp_path: Path
) -> None:
    longest = spec(namespace, "v" * 30, MODELS)  # v...-n...: 63 characters, a full label
    named = longest.contract.model_copy(update={"name": f"{namespace}/{NAME}"})
    at_limit = longest.model_copy(update={"contract": named})
    version = at_limit.variant.version
    desired = state(at_limit, traffic={version: 100})
    agreement.serving(platform, Real(kube, namespace), desired, {version: 100})

    past = tmp_path / "model.yaml"
    past.write_text(yaml.safe_dump({
        "contract": {**at_limit.contract.model_dump(mode="json")},
        "variant": {"version": "v" * 31, "model": {"uri": f"{MODELS}/m.pt2",
                                                     "format": "torch_export"}},
    }))
    ran = subprocess.run(
        [str(Path(sys.executable).parent / "ffctl"), "deploy", str(past), "--dry-run",
         "--platform", "knative"], capture_output=True, text=True, timeout=60,
    )
    assert ran.returncode == 2, ran
    said = " ".join(ran.stderr.split())  # as the terminal wraps it
    assert "variant.version:" in said and "is 64 characters; at most 63" in said, said


def test_knatives_webhook_takes_forestflows_config_and_refuses_what_it_refused_before(
    kube: client.ApiClient,
) -> None:
    """knative/config-autoscaler.yaml once set max-scale-limit without max-scale, which
    Knative 1.23 refuses; only its own ConfigMap webhook said so."""
    core = client.CoreV1Api(kube)
    for path in sorted((REPO / "knative").glob("config-*.yaml")):
        config_map = yaml.safe_load(path.read_text())
        core.patch_namespaced_config_map(
            config_map["metadata"]["name"], "knative-serving", config_map, dry_run="All"
        )
    broken = yaml.safe_load((REPO / "knative" / "config-autoscaler.yaml").read_text())
    broken["data"]["max-scale"] = "0"
    with pytest.raises(client.ApiException) as refused:
        core.patch_namespaced_config_map(
            "config-autoscaler", "knative-serving", broken, dry_run="All"
        )
    assert refused.value.status == 400
    assert "max-scale = 0, must be in [1, max-scale-limit(100)] range" in str(refused.value.body)
