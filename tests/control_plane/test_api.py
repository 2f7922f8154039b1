from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from redis import Redis
from rq import Queue

from forestflow_control_plane import names
from forestflow_control_plane.api import create_app
from forestflow_control_plane.auth import load_tokens
from forestflow_control_plane.settings import Settings
from tests.support import REPO, free_port, serving

ADMIN = "admin-token-0123456789"
READER = "read-token-0123456789"


@pytest.fixture
def api_url(redis: Redis, redis_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path, redis_url=redis_url)
    tokens = load_tokens({"FF_ADMIN_TOKEN": ADMIN, "FF_READ_TOKEN": READER})
    with serving(create_app(settings, tokens), free_port()) as url:
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
    contract = api.get("/v1/contracts/examples/mlp").json()
    assert [v["version"] for v in contract["variants"]] == ["v1"]
    assert api.get(f"/v1/jobs/{response.json()['job']}").json()["status"] == "queued"

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
