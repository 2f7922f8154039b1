from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job

from forestflow_control_plane import names
from forestflow_control_plane.api.app import create_app
from forestflow_control_plane.api.auth import load_tokens
from forestflow_control_plane.composition import Parts
from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.rollouts import jobs
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.state.records import ContractSnapshot, RolloutProgress, RolloutRecord
from forestflow_control_plane.state.store import Store
from tests.support import REPO, free_port, serving

ADMIN = "admin-token-0123456789"
READER = "read-token-0123456789"


@pytest.fixture
def api_url(redis: Redis, redis_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path, redis_url=redis_url)
    tokens = load_tokens({"FF_ADMIN_TOKEN": ADMIN, "FF_READ_TOKEN": READER})
    with serving(create_app(Parts(settings), tokens), free_port()) as url:
        yield url


@pytest.fixture
def api(api_url: str) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=api_url, headers=headers) as client:
        yield client


@pytest.fixture
def model_yaml(tmp_path: Path) -> dict[str, object]:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not read by the API")
    spec = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
    spec["variant"]["model"]["uri"] = str(weights)
    spec["variant"]["model"]["python_path"] = str(tmp_path)
    return dict(spec)


def deploy(api: httpx.Client, spec: object) -> httpx.Response:
    body = spec if isinstance(spec, bytes) else yaml.safe_dump(spec).encode()
    return api.post("/v1/deploy", content=body, headers={"content-type": "application/yaml"})


def test_deploy_stores_and_enqueues_the_rollout(
    api: httpx.Client, redis: Redis, model_yaml: dict[str, object]
) -> None:
    response = deploy(api, model_yaml)
    assert response.status_code == 202, response.text
    assert response.json()["contract"] == "examples/mlp"
    assert Queue(names.ROLLOUT_QUEUE, connection=redis).count == 1
    variants = api.get("/v1/contracts/examples/mlp").json()["variants"]
    assert [v["version"] for v in variants] == ["v1"]
    assert api.get(f"/v1/jobs/{response.json()['job']}").json()["status"] == "queued"
    assert Job.fetch(response.json()["job"], connection=redis).retry_intervals == [1, 2, 4]
    assert deploy(api, model_yaml).status_code == 202  # the same file again: no change
    variant = model_yaml["variant"]
    assert isinstance(variant, dict)
    variant["device"] = "cuda"
    again = deploy(api, model_yaml)
    assert again.status_code == 409
    assert again.json()["detail"].startswith("variant.version")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"contract: [", ""),
        (b"- 1", ""),
        (b"\xff\xfe", ""),
    ],
)
def test_unparseable_bodies_are_422(api: httpx.Client, body: bytes, field: str) -> None:
    response = deploy(api, body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field
    assert api.get("/v1/contracts").json() == {"contracts": []}


def test_invalid_fields_are_named_and_nothing_is_stored(
    api: httpx.Client, redis: Redis, model_yaml: dict[str, object]
) -> None:
    variant = model_yaml["variant"]
    assert isinstance(variant, dict)
    variant["model"]["uri"] = "/no/such/file.safetensors"
    variant["bacthing"] = {}
    response = deploy(api, model_yaml)
    assert response.status_code == 422
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["variant.bacthing"]  # schema first; the artifact check needs a valid file
    del variant["bacthing"]
    response = deploy(api, model_yaml)
    assert [e["field"] for e in response.json()["errors"]] == ["variant.model.uri"]
    assert api.get("/v1/contracts").json() == {"contracts": []}
    assert Queue(names.ROLLOUT_QUEUE, connection=redis).count == 0


def test_not_found_and_too_large(api: httpx.Client) -> None:
    assert api.get("/v1/contracts/no/such").status_code == 404
    assert api.get("/v1/contracts/no/such/events").status_code == 404
    assert api.get("/v1/jobs/nope").status_code == 404
    assert deploy(api, b"#" * (2 << 20)).status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("GET", "/v1/contracts", None, 401),
        ("GET", "/v1/contracts", "not-a-known-token-at-all", 401),
        ("GET", "/v1/contracts", READER, 200),
        ("POST", "/v1/deploy", None, 401),
        ("POST", "/v1/deploy", READER, 403),
        ("GET", "/v1/contracts/examples/mlp/variants", None, 401),
        ("GET", "/v1/contracts/examples/mlp/variants", READER, 404),
        ("GET", "/v1/contracts/examples/mlp/variants/v1", READER, 404),
        ("DELETE", "/v1/contracts/examples/mlp", None, 401),
        ("DELETE", "/v1/contracts/examples/mlp", READER, 403),
        ("DELETE", "/v1/contracts/examples/mlp/variants/v1", READER, 403),
        ("GET", "/healthz", None, 200),
    ],
)
def test_tokens_and_roles(
    api_url: str, method: str, path: str, token: str | None, status: int
) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.request(method, api_url + path, headers=headers, content=b"x: 1")
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_events_name_the_token_holder(api: httpx.Client, model_yaml: dict[str, object]) -> None:
    assert deploy(api, model_yaml).status_code == 202
    (event,) = api.get("/v1/contracts/examples/mlp/events").json()["events"]
    assert (event["who"], event["what"]) == ("admin", "deploy v1")


def test_malformed_path_parameters_are_422_naming_them(api: httpx.Client) -> None:
    response = api.get("/v1/jobs/not a job!")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "job_id"
    assert api.get("/v1/contracts/Bad_NS/x").json()["errors"][0]["field"] == "namespace"
    bad = api.delete("/v1/contracts/a/b/variants/V_1", params={"expected_generation": -1})
    assert [e["field"] for e in bad.json()["errors"]] == ["version", "expected_generation"]


def test_rollout_actions(api: httpx.Client, api_url: str, model_yaml: dict[str, object]) -> None:
    assert deploy(api, model_yaml).status_code == 202
    pause = api.post("/v1/contracts/examples/mlp/rollout/pause")
    assert pause.status_code == 409
    assert "no rollout" in pause.json()["detail"]
    assert api.post("/v1/contracts/examples/mlp/rollout/explode").status_code == 422
    reader = {"authorization": f"Bearer {READER}"}
    denied = httpx.post(f"{api_url}/v1/contracts/examples/mlp/rollout/pause", headers=reader)
    assert denied.status_code == 403
    view = api.get("/v1/contracts/examples/mlp/rollout").json()
    assert view == {"contract": "examples/mlp", "traffic": {}, "rollout": None}


CONTRACT = "/v1/contracts/examples/mlp"


def with_version(spec: dict[str, Any], version: str, **phase_in: object) -> dict[str, Any]:
    variant = {**spec["variant"], "version": version}
    rollout = {"phase_in": {"policy": "immediate", **phase_in}}
    return {**spec, "variant": variant, "rollout": rollout}


def roll_out(redis: Redis, version: str) -> None:
    """What the rollout job does, run here instead of in a worker."""
    platform = LocalPlatform(redis, "runtime:test")
    Rollouts(Store(redis), platform, lambda call: None).start("examples/mlp", version)


def work_the_queue(redis_url: str, home: Path) -> None:
    """What a worker does with the jobs the API enqueued, run here until none is left."""
    parts = Parts(Settings(home=home, redis_url=redis_url))
    jobs.bind(parts)
    try:
        SimpleWorker([parts.queue], connection=parts.redis).work(burst=True)
    finally:
        parts.close()


def services(redis: Redis) -> list[str]:
    return sorted(f.decode() for f in redis.hkeys(names.LOCAL_SERVICES))  # type: ignore[union-attr]


def route_tags(redis: Redis) -> list[str]:
    raw = redis.hget(names.LOCAL_ROUTES, "examples/mlp")
    return [] if raw is None else [t["tag"] for t in orjson.loads(raw)["spec"]["traffic"]]  # type: ignore[arg-type]


def test_variants_are_read_one_by_one_or_all(
    api: httpx.Client, model_yaml: dict[str, Any]
) -> None:
    assert deploy(api, model_yaml).status_code == 202
    assert deploy(api, with_version(model_yaml, "v2")).status_code == 202
    listed = api.get(f"{CONTRACT}/variants").json()
    assert listed["contract"] == "examples/mlp"
    assert [v["version"] for v in listed["variants"]] == ["v1", "v2"]
    assert listed["variants"] == api.get(CONTRACT).json()["variants"]
    one = api.get(f"{CONTRACT}/variants/v2")
    assert one.status_code == 200
    assert one.json() == listed["variants"][1]
    assert (one.json()["state"], one.json()["spec"]["device"]) == ("pending", "cpu")


@pytest.mark.parametrize(
    ("method", "path", "named"),
    [
        ("GET", f"{CONTRACT}/variants/v9", "variant examples/mlp@v9"),
        ("DELETE", f"{CONTRACT}/variants/v9", "variant examples/mlp@v9"),
        ("GET", "/v1/contracts/no/such/variants", "no/such"),
        ("GET", "/v1/contracts/no/such/variants/v1", "no/such"),
        ("DELETE", "/v1/contracts/no/such/variants/v1", "no/such"),
        ("DELETE", "/v1/contracts/no/such", "no/such"),
    ],
)
def test_not_found_names_what_is_missing(
    api: httpx.Client, model_yaml: dict[str, Any], method: str, path: str, named: str
) -> None:
    assert deploy(api, model_yaml).status_code == 202
    response = api.request(method, path)
    assert response.status_code == 404
    assert named in response.json()["detail"]


def test_a_variant_is_deleted_only_once_it_serves_nothing(
    api: httpx.Client, redis: Redis, redis_url: str, tmp_path: Path, model_yaml: dict[str, Any]
) -> None:
    assert deploy(api, model_yaml).status_code == 202
    roll_out(redis, "v1")
    canary = with_version(model_yaml, "v2", policy="canary", steps=[30, 100], hold_seconds=3600)
    assert deploy(api, canary).status_code == 202
    roll_out(redis, "v2")
    for version, share in (("v2", 30), ("v1", 70)):
        refused = api.delete(f"{CONTRACT}/variants/{version}")
        assert refused.status_code == 409
        assert refused.json()["detail"] == (
            f"{version} serves {share} % of examples/mlp: roll it back or promote another "
            "version first"
        )
    assert api.post(f"{CONTRACT}/rollout/promote").status_code == 200
    assert services(redis) == ["examples/ff-mlp-v1", "examples/ff-mlp-v2"]  # v1 at 0 %
    generation = api.get(CONTRACT).json()["generation"]
    events = len(api.get(f"{CONTRACT}/events").json()["events"])

    stale = api.delete(f"{CONTRACT}/variants/v1", params={"expected_generation": generation - 1})
    assert stale.status_code == 409
    assert "expected_generation" in stale.json()["detail"]
    assert api.get(f"{CONTRACT}/variants/v1").json()["state"] == "serving"

    deleted = api.delete(f"{CONTRACT}/variants/v1", params={"expected_generation": generation})
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["state"], deleted.json()["reason"]) == ("expired", "deleted by admin")
    assert api.get(f"{CONTRACT}/variants/v1").json() == deleted.json()
    assert api.get(f"{CONTRACT}/traffic").json()["traffic"] == {"v2": 100}
    log = api.get(f"{CONTRACT}/events").json()["events"]
    assert len(log) == events + 1
    assert (log[-1]["who"], log[-1]["what"]) == ("admin", "delete v1")
    assert log[-1]["after"]["variants"]["v1"] == "expired"
    assert services(redis) == ["examples/ff-mlp-v1", "examples/ff-mlp-v2"]  # the API applies none
    work_the_queue(redis_url, tmp_path)
    assert services(redis) == ["examples/ff-mlp-v2"]
    assert route_tags(redis) == ["v2"]

    again = api.delete(f"{CONTRACT}/variants/v1")  # already expired: nothing to write
    assert again.status_code == 200
    assert again.json() == deleted.json()
    assert len(api.get(f"{CONTRACT}/events").json()["events"]) == events + 1


def running(candidate: str, previous: dict[str, int], traffic: dict[str, int]) -> Any:
    def change(before: ContractSnapshot | None) -> ContractSnapshot:
        assert before is not None
        progress = RolloutProgress(candidate, previous, 0, 1.0, 1.0)
        rollout = RolloutRecord(progress, token=1, next_at=2.0)
        return replace(before, contract=replace(before.contract, traffic=traffic, rollout=rollout))

    return change


@pytest.mark.parametrize(
    ("name", "candidate", "previous", "traffic", "delete", "why"),
    [
        ("candidate before its first step", "v2", {"v1": 100}, {"v1": 100, "v2": 0}, "v2",
         "v2 is being rolled out on examples/mlp (running): roll it back or abort it first"),
        ("what a rollback restores", "v2", {"v1": 100}, {"v1": 0, "v2": 100}, "v1",
         "v1 is what the running rollout of v2 on examples/mlp would roll back to: "
         "promote v2 or let its rollout finish first"),
    ],
)
def test_a_variant_a_running_rollout_needs_is_not_deleted(
    api: httpx.Client,
    redis: Redis,
    model_yaml: dict[str, Any],
    name: str,
    candidate: str,
    previous: dict[str, int],
    traffic: dict[str, int],
    delete: str,
    why: str,
) -> None:
    assert deploy(api, model_yaml).status_code == 202
    assert deploy(api, with_version(model_yaml, "v2")).status_code == 202
    Store(redis).update(
        "examples/mlp", running(candidate, previous, traffic), who="t", what="set up"
    )
    refused = api.delete(f"{CONTRACT}/variants/{delete}")
    assert refused.status_code == 409, name
    assert refused.json()["detail"] == why
    assert api.get(f"{CONTRACT}/variants/{delete}").json()["state"] == "pending"


def test_a_contract_with_traffic_is_deleted_only_by_force(
    api: httpx.Client, redis: Redis, redis_url: str, tmp_path: Path, model_yaml: dict[str, Any]
) -> None:
    assert deploy(api, model_yaml).status_code == 202
    roll_out(redis, "v1")
    assert services(redis) == ["examples/ff-mlp-v1"]
    refused = api.delete(CONTRACT)
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "examples/mlp still serves traffic (v1 100 %): roll its versions back first, "
        "or delete with force=true"
    )
    assert api.get(CONTRACT).status_code == 200
    generation = api.get(CONTRACT).json()["generation"]
    stale = api.delete(CONTRACT, params={"force": True, "expected_generation": generation + 1})
    assert stale.status_code == 409
    assert api.get(CONTRACT).status_code == 200

    deleted = api.delete(CONTRACT, params={"force": True, "expected_generation": generation})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["name"] == "examples/mlp"
    assert [v["version"] for v in deleted.json()["variants"]] == ["v1"]
    for path in (CONTRACT, f"{CONTRACT}/variants", f"{CONTRACT}/variants/v1"):
        assert api.get(path).status_code == 404, path
    assert api.get("/v1/contracts").json() == {"contracts": []}
    work_the_queue(redis_url, tmp_path)
    assert services(redis) == []
    assert route_tags(redis) == []
    log = api.get(f"{CONTRACT}/events").json()["events"]  # the audit log outlives it
    assert (log[0]["what"], log[-1]["who"], log[-1]["what"]) == (
        "deploy v1", "admin", "deleted by admin"
    )
    assert api.delete(CONTRACT).status_code == 404


def test_a_contract_without_traffic_is_deleted_and_can_come_back(
    api: httpx.Client, redis: Redis, model_yaml: dict[str, Any]
) -> None:
    assert deploy(api, model_yaml).status_code == 202
    assert api.delete(CONTRACT).status_code == 200
    assert api.get(CONTRACT).status_code == 404
    assert redis.keys("ff:variants:*") == []
    again = deploy(api, model_yaml)
    assert again.status_code == 202
    assert again.json()["generation"] == 1
    assert [v["state"] for v in api.get(f"{CONTRACT}/variants").json()["variants"]] == ["pending"]


async def test_a_deploy_waiting_on_redis_leaves_the_event_loop_serving(
    api_url: str, redis: Redis, model_yaml: dict[str, Any]
) -> None:
    """Redis holds every write for a while (CLIENT PAUSE): the deploy's register waits on
    it, off the event loop, and the API answers other requests meanwhile."""
    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/yaml"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=60) as client:
        redis.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
        try:
            deploying = asyncio.create_task(
                client.post("/v1/deploy", content=yaml.safe_dump(model_yaml).encode())
            )
            while not any("b" in c["flags"] for c in redis.client_list()):  # blocked
                await asyncio.sleep(0.02)
            assert (await client.get("/openapi.json")).status_code == 200
            assert not deploying.done()  # still held by Redis
        finally:
            redis.execute_command("CLIENT", "UNPAUSE")
        assert (await deploying).status_code == 202
