from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema
import pytest
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.knative.admission import InvalidObjectError, crd_schema
from forestflow_control_plane.knative.resources import make_service
from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.policies.desired import DesiredVariant, desired_state
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.spec.model_file import ModelFileError, validate_model_file
from forestflow_control_plane.state.store import Store

from .test_store import model_file


def rolled_out(redis: Redis, *versions: str) -> LocalPlatform:
    store, platform = Store(redis), LocalPlatform(redis, "runtime:test")
    for version in versions:
        register(store, model_file(version), who="t")
        Rollouts(store, platform, lambda call: None).start("examples/mlp", version)
    return platform


def stored_objects(redis: Redis) -> list[dict[str, Any]]:
    import orjson

    return [
        orjson.loads(raw)
        for key in (names.LOCAL_SERVICES, names.LOCAL_ROUTES)
        for raw in redis.hvals(key)  # type: ignore[union-attr]
    ]


def test_every_object_validates_against_the_upstream_crd(redis: Redis) -> None:
    rolled_out(redis, "v1", "v2")
    objects = stored_objects(redis)
    assert sorted(o["kind"] for o in objects) == ["Route", "Service", "Service"]
    for obj in objects:
        errors = list(jsonschema.Draft4Validator(crd_schema(obj["kind"])).iter_errors(obj))
        assert not errors, [e.message for e in errors]


def test_service_carries_scaling_and_runtime_config(redis: Redis) -> None:
    rolled_out(redis, "v1")
    service = next(o for o in stored_objects(redis) if o["kind"] == "Service")
    assert service["metadata"]["name"] == "ff-mlp-v1"
    template = service["spec"]["template"]
    notes = template["metadata"]["annotations"]
    assert notes["autoscaling.knative.dev/min-scale"] == "0"
    assert notes["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] == "60s"
    env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
    assert env["FF_MODEL_CLASS"] == "model:MLP"
    assert env["FF_MODEL_NAME"] == "mlp"
    probe = template["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    assert probe == "/v2/models/mlp/ready"


def test_apply_is_idempotent_and_only_touches_its_contract(redis: Redis) -> None:
    platform = rolled_out(redis, "v1")
    snapshot = Store(redis).get("examples/mlp")
    redis.hset(names.LOCAL_SERVICES, "other/ff-x-v1", b'{"metadata": {"labels": {}}}')
    assert platform.apply(desired_state(snapshot)) is False
    assert redis.hexists(names.LOCAL_SERVICES, "other/ff-x-v1")


def test_long_names_are_cut_with_a_stable_hash() -> None:
    long = names.service_name("team/" + "a" * 40, "v" + "1" * 30)
    assert len(long) <= 63
    assert long == names.service_name("team/" + "a" * 40, "v" + "1" * 30)
    assert long != names.service_name("team/" + "a" * 40, "v" + "1" * 29 + "2")


def scaled(**scaling: Any) -> dict[str, Any]:
    """The example's variant spec with these scaling settings, validated as model.yaml."""
    data = model_file("v1").model_dump(mode="json", by_alias=True)
    data["variant"]["scaling"] = scaling
    return validate_model_file(data).variant.model_dump(mode="json", by_alias=True)


def service_of(spec: dict[str, Any]) -> dict[str, Any]:
    contract = model_file("v1").contract.model_dump(mode="json")
    return make_service("examples/mlp", contract, DesiredVariant("v1", spec), "runtime:test")


A = "autoscaling.knative.dev/"
SCALING = [
    ("defaults", {}, 0, {
        A + "metric": "concurrency", A + "target": "8", A + "min-scale": "0",
        A + "max-scale": "1", A + "scale-to-zero-pod-retention-period": "60s",
        "serving.knative.dev/progress-deadline": "600s",
    }),
    ("every knob", {
        "metric": "rps", "target_concurrency": 50, "min_replicas": 1, "max_replicas": 8,
        "initial_replicas": 0, "window_seconds": 120, "container_concurrency": 4,
        "retention_seconds": 0.5, "progress_deadline_seconds": 1200,
    }, 4, {
        A + "metric": "rps", A + "target": "50", A + "min-scale": "1", A + "max-scale": "8",
        A + "initial-scale": "0", A + "window": "120s",
        A + "scale-to-zero-pod-retention-period": "0.5s",
        "serving.knative.dev/progress-deadline": "1200s",
    }),
]


@pytest.mark.parametrize(
    ("name", "scaling", "concurrency", "want"), SCALING, ids=[row[0] for row in SCALING]
)
def test_scaling_becomes_the_revision_autoscaler_settings(
    name: str, scaling: dict[str, Any], concurrency: int, want: dict[str, str]
) -> None:
    template = service_of(scaled(**scaling))["spec"]["template"]
    assert template["metadata"]["annotations"] == want
    assert template["spec"]["containerConcurrency"] == concurrency


def test_a_spec_stored_before_the_new_knobs_reads_as_their_defaults() -> None:
    spec = scaled()
    spec["scaling"] = {k: spec["scaling"][k] for k in (
        "min_replicas", "max_replicas", "target_concurrency", "retention_seconds")}
    assert service_of(spec) == service_of(scaled())


BAD_SCALING = [
    ("min above max", {"min_replicas": 3, "max_replicas": 2}, "variant.scaling.min_replicas",
     "3 must not exceed max_replicas (2)"),
    ("initial above max", {"initial_replicas": 5, "max_replicas": 2},
     "variant.scaling.initial_replicas", "5 must not exceed max_replicas (2)"),
    ("metric knative cannot scale on", {"metric": "cpu"}, "variant.scaling.metric",
     "'concurrency' or 'rps'"),
    ("window under knative's 6s", {"window_seconds": 5}, "variant.scaling.window_seconds",
     "greater than or equal to 6"),
    ("window over an hour", {"window_seconds": 3601}, "variant.scaling.window_seconds",
     "less than or equal to 3600"),
    ("retention over knative's hour", {"retention_seconds": 7200},
     "variant.scaling.retention_seconds", "less than or equal to 3600"),
    ("negative container concurrency", {"container_concurrency": -1},
     "variant.scaling.container_concurrency", "greater than or equal to 0"),
    ("zero progress deadline", {"progress_deadline_seconds": 0},
     "variant.scaling.progress_deadline_seconds", "greater than or equal to 1"),
]


@pytest.mark.parametrize(
    ("name", "scaling", "field", "message"), BAD_SCALING, ids=[row[0] for row in BAD_SCALING]
)
def test_bad_scaling_names_the_field(
    name: str, scaling: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ModelFileError) as info:
        scaled(**scaling)
    errors = {e.field: e.message for e in info.value.errors}
    assert field in errors, errors
    assert message in errors[field]


def test_apply_refuses_what_a_cluster_would_and_writes_nothing(redis: Redis) -> None:
    platform = rolled_out(redis, "v1")
    before = stored_objects(redis)
    state = desired_state(Store(redis).get("examples/mlp"))
    old = state.variants[0]
    stale = {**old.spec, "scaling": {**old.spec["scaling"], "retention_seconds": 7200}}
    bad = dataclasses.replace(state, variants=(DesiredVariant(old.version, stale),))
    with pytest.raises(InvalidObjectError) as info:
        platform.apply(bad)
    assert "Service examples/ff-mlp-v1: spec.template.metadata.annotations" in str(info.value)
    assert "7200s is outside 0s..3600s" in str(info.value)
    assert stored_objects(redis) == before
