"""The shadow report: what the mirror recorded, read back by the API and `ffctl shadow
report`. Results are written here through the mirror's own `record`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml
from redis import Redis
from typer.testing import CliRunner

from forestflow_cli.shadow import shadow_app
from forestflow_control_plane import names
from forestflow_control_plane.api.app import create_app
from forestflow_control_plane.api.auth import load_tokens
from forestflow_control_plane.composition import Parts
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.shadows.agreement import Agreement
from forestflow_control_plane.shadows.results import (
    LATENCY_SAMPLES,
    RESULTS_TTL_S,
    Outcome,
    record,
)
from forestflow_control_plane.spec.model_file import validate_model_file
from forestflow_control_plane.state.store import Store
from tests.control_plane.memory_platform import MemoryPlatform
from tests.support import REPO, free_port, serving

C = "examples/mlp"
ADMIN = "admin-token-0123456789"
READER = "read-token-0123456789"
NOTHING_YET: dict[str, Any] = {
    "requests": 0, "compared": 0, "agreed": 0, "agreement": None, "max_abs_diff": None,
    "mean_abs_diff": None, "errors": 0, "primary_versions": [],
    "latency_ms": {"primary": {"p50": None, "p95": None}, "shadow": {"p50": None, "p95": None}},
}


@pytest.fixture
def api_url(redis: Redis, redis_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path, redis_url=redis_url)
    tokens = load_tokens({"FF_ADMIN_TOKEN": ADMIN, "FF_READ_TOKEN": READER})
    with serving(create_app(Parts(settings), tokens), free_port()) as url:
        yield url


def deploy(redis: Redis, shadows: list[str]) -> None:
    """examples/mlp: v1 serving, then each of `shadows` as a shadow."""
    store = Store(redis)
    rollouts = Rollouts(store, MemoryPlatform(), lambda call: None)
    base = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
    register(store, validate_model_file(base), who="t")
    rollouts.start(C, "v1")
    for version in shadows:
        data = {**base, "variant": {**base["variant"], "version": version}, "shadow": True}
        register(store, validate_model_file(data), who="t")
        rollouts.start(C, version)


def outcome(
    shadow: str, agreement: Agreement | None, primary_ms: float, shadow_ms: float | None
) -> Outcome:
    return Outcome(C, shadow, "v1", primary_ms, shadow_ms, agreement)


def write(redis: Redis, *outcomes: Outcome) -> None:
    for each in outcomes:
        pipe = redis.pipeline()
        record(pipe, each)
        pipe.execute()


@pytest.fixture
def recorded(redis: Redis) -> None:
    """v2 compared twice (7 of 8 rows agree) and failed once; v3 not mirrored yet."""
    deploy(redis, ["v2", "v3"])
    write(
        redis,
        outcome("v2", Agreement(4, 3, 0.5, 1.0, 12), 10.0, 30.0),
        outcome("v2", Agreement(4, 4, 0.25, 0.5, 12), 20.0, 40.0),
        outcome("v2", None, 15.0, None),
    )


V2 = {
    "version": "v2", "primary_versions": ["v1"], "requests": 2, "compared": 8, "agreed": 7,
    "agreement": 0.875, "max_abs_diff": 0.5, "mean_abs_diff": 0.0625, "errors": 1,
    "latency_ms": {"primary": {"p50": 15.0, "p95": 19.5}, "shadow": {"p50": 35.0, "p95": 39.5}},
}


@pytest.mark.usefixtures("recorded")
def test_the_api_reports_each_shadow(api_url: str) -> None:
    reply = httpx.get(
        f"{api_url}/v1/contracts/{C}/shadows", headers={"authorization": f"Bearer {READER}"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"contract": C, "shadows": [V2, {"version": "v3", **NOTHING_YET}]}


def test_the_report_of_an_unknown_contract_is_404(api_url: str) -> None:
    reply = httpx.get(
        f"{api_url}/v1/contracts/examples/nothing/shadows",
        headers={"authorization": f"Bearer {READER}"},
    )
    assert reply.status_code == 404
    assert "examples/nothing" in reply.json()["detail"]


def test_a_contract_without_shadows_has_an_empty_report(redis: Redis, api_url: str) -> None:
    deploy(redis, [])
    reply = httpx.get(
        f"{api_url}/v1/contracts/{C}/shadows", headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert reply.json() == {"contract": C, "shadows": []}


def test_latency_samples_are_capped_and_results_expire(redis: Redis) -> None:
    deploy(redis, ["v2"])
    same = Agreement(1, 1, 0.0, 0.0, 3)
    write(redis, *(outcome("v2", same, 1.0, 2.0) for _ in range(LATENCY_SAMPLES + 5)))
    assert redis.llen(names.shadow_latency_key(C, "v2", "shadow")) == LATENCY_SAMPLES
    assert 0 < redis.ttl(names.shadow_results_key(C, "v2")) <= RESULTS_TTL_S


def shadow_cli(*args: str) -> Any:
    app = typer.Typer()
    app.add_typer(shadow_app, name="shadow")
    return CliRunner().invoke(app, ["shadow", *args], env={"COLUMNS": "160"})


@pytest.mark.usefixtures("recorded")
def test_ffctl_shadow_report_prints_a_table_or_the_api_data(api_url: str) -> None:
    flags = ["--server", api_url, "--token", READER]
    table = shadow_cli("report", C, *flags)
    assert table.exit_code == 0, table.output
    row = next(line for line in table.output.splitlines() if "v2" in line)
    for cell in ("v1", "87.5% (7/8)", "0.5", "0.0625", "15 / 35", "19.5 / 39.5"):
        assert cell in row
    assert "v3" in table.output
    as_json = shadow_cli("report", C, *flags, "--output", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["shadows"][0] == V2
    as_yaml = shadow_cli("report", C, *flags, "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout)["shadows"][0] == V2


def test_ffctl_shadow_report_of_an_unknown_contract_fails_with_bad_input(api_url: str) -> None:
    result = shadow_cli("report", "examples/nothing", "--server", api_url, "--token", READER)
    assert result.exit_code == 2
    assert "examples/nothing" in result.output
