from __future__ import annotations

from typing import Any

import jsonschema
import yaml
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.deployments import register
from forestflow_control_plane.desired import desired_state
from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.rollouts import Rollouts
from forestflow_control_plane.store import Store
from tests.support import REPO

from .test_store import model_file

CRDS = REPO / "knative" / "crds"


def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{kind.lower()}.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return dict(version["schema"]["openAPIV3Schema"])


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
