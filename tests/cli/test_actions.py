"""Steering a rollout (promote, pause, resume, rollback, abort) and deleting, through ffctl
against the real API: each prints what the rollout became, or the API's answer as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from redis import Redis

from .conftest import CONTRACT, Ffctl, deploy, model_spec, roll_out

CANARY = {"phase_in": {"policy": "canary", "steps": [30, 100], "hold_seconds": 3600}}


@pytest.fixture
def canary(api: httpx.Client, redis: Redis, tmp_path: Path) -> None:
    deploy(api, model_spec(tmp_path, "v1"))
    roll_out(redis, "v1")
    deploy(api, model_spec(tmp_path, "v2", **CANARY))
    roll_out(redis, "v2")


@pytest.mark.parametrize(
    ("steps", "status", "traffic"),
    [
        (["promote"], "succeeded", "v2 100%, v1 0%"),
        (["pause"], "paused", "v1 70%, v2 30%"),
        (["pause", "resume"], "running", "v1 70%, v2 30%"),
        (["rollback"], "rolled_back", "v1 100%"),
        (["abort"], "aborted", "v1 100%"),
    ],
)
@pytest.mark.usefixtures("canary")
def test_rollout_actions_say_what_the_rollout_became(
    admin: Ffctl, api: httpx.Client, steps: list[str], status: str, traffic: str
) -> None:
    for action in steps:
        done = admin(action, CONTRACT)
        assert done.exit_code == 0, done.output
    assert done.stdout == (
        f"{CONTRACT}: rollout of v2 {status}\ntraffic: {traffic}\n"
    )
    rollout = api.get(f"/v1/contracts/{CONTRACT}/rollout").json()["rollout"]
    assert rollout["progress"]["status"] == status


@pytest.mark.usefixtures("canary")
def test_an_action_answers_json_and_a_finished_rollout_refuses_another(
    admin: Ffctl, api: httpx.Client
) -> None:
    promoted = admin("promote", CONTRACT, "-o", "json")
    answer = json.loads(promoted.stdout)
    assert answer["rollout"] == api.get(f"/v1/contracts/{CONTRACT}/rollout").json()["rollout"]
    assert answer["traffic"] == {"v1": 0, "v2": 100}
    again = admin("rollback", CONTRACT)
    assert again.exit_code == 2
    assert "(409)" in again.stderr and "rollout of examples/mlp@v2" in again.stderr


@pytest.mark.usefixtures("canary")
def test_delete_a_variant_then_the_contract(admin: Ffctl, api: httpx.Client) -> None:
    refused = admin("delete", "variant", CONTRACT, "v1")
    assert refused.exit_code == 2
    assert "v1 serves 70 % of examples/mlp" in refused.stderr
    assert admin("promote", CONTRACT).exit_code == 0
    retired = admin("delete", "variant", CONTRACT, "v1")
    assert (retired.exit_code, retired.stdout) == (0, "deleted examples/mlp@v1 (expired)\n")
    kept = admin("delete", "contract", CONTRACT)
    assert kept.exit_code == 2
    assert "still serves traffic" in kept.stderr
    deleted = admin("delete", "contract", CONTRACT, "--force", "-o", "json")
    assert deleted.exit_code == 0, deleted.output
    assert [v["version"] for v in json.loads(deleted.stdout)["variants"]] == ["v1", "v2"]
    assert api.get("/v1/contracts").json() == {"contracts": []}
