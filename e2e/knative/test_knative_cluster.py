"""What Kubernetes' own API server and Knative's own controllers say of the objects the
knative platform applies (issue 12's findings): each test asserts the cluster's own record:
Route status, its conditions, observed generations, Revision conditions, resource versions,
and which objects exist. The platform runs as the ServiceAccount knative/control-plane.yaml
binds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from forestflow_control_plane.platforms.knative import KnativePlatform
from tests.control_plane import knative_agreement as agreement

from .cluster_view import Events, Real, condition, get, model, state
from .control import spec, wait_for

pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parents[2]


def test_knatives_own_routes_survive_applies(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str, models: str
) -> None:
    v1, v2 = model(models, namespace, "v1"), model(models, namespace, "v2")
    desired = state(v1, v2, traffic={"v1": 50, "v2": 50})
    agreement.knatives_own_routes_survive_applies(
        platform, Real(kube, namespace), desired, {"v1": 50, "v2": 50}
    )


def test_a_second_apply_changes_nothing(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str, models: str
) -> None:
    v1, v2 = model(models, namespace, "v1"), model(models, namespace, "v2")
    desired = state(v1, v2, traffic={"v1": 70, "v2": 30})
    real = Real(kube, namespace)
    agreement.a_second_apply_changes_nothing(
        platform, real, desired, {"v1": 70, "v2": 30}, real.quiet
    )


def test_an_unready_version_is_no_target(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str, models: str
) -> None:
    stuck = model(models, namespace, "v2", resources={"cpu": "500"})  # more than the one node has
    desired = state(model(models, namespace, "v1"), stuck, traffic={"v1": 90, "v2": 10})
    agreement.an_unready_version_is_no_target(
        platform, Real(kube, namespace), desired, "v2", {"v1": 100}
    )


def test_a_retired_service_goes_only_after_the_routes_status_stops_naming_it(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str, models: str
) -> None:
    v1, v2 = model(models, namespace, "v1"), model(models, namespace, "v2")
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
    kube: client.ApiClient, platform: KnativePlatform, namespace: str, models: str
) -> None:
    v1, v3 = model(models, namespace, "v1"), model(models, namespace, "v3")
    # More CPU than the cluster's one (fake) node has: its pod is never scheduled.
    stuck = model(models, namespace, "v2", resources={"cpu": "500"})
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


NAME = "n" * 32  # the longest contract name model.yaml takes


def test_names_at_the_limits_apply_and_one_past_them_is_refused_by_dry_run(
    kube: client.ApiClient, platform: KnativePlatform, namespace: str, tmp_path: Path,
    models: str,
) -> None:
    longest = spec(namespace, "v" * 30, models, "v1")  # v...-n...: 63 characters, a label
    named = longest.contract.model_copy(update={"name": f"{namespace}/{NAME}"})
    at_limit = longest.model_copy(update={"contract": named})
    version = at_limit.variant.version
    desired = state(at_limit, traffic={version: 100})
    agreement.serving(platform, Real(kube, namespace), desired, {version: 100})

    past = tmp_path / "model.yaml"
    past.write_text(yaml.safe_dump({
        "contract": {**at_limit.contract.model_dump(mode="json")},
        "variant": {"version": "v" * 31, "model": {"uri": f"{models}/v1.pt2",
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
