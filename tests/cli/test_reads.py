"""Every read command in table, json and yaml: json and yaml carry exactly the API's data,
the table shows what a person looks for."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis import Redis

from forestflow_control_plane.state.records import GateVerdict
from forestflow_control_plane.state.store import Store

from .conftest import CONTRACT, Ffctl, deploy, model_spec, roll_out

CANARY = {"phase_in": {"policy": "canary", "steps": [30, 100], "hold_seconds": 3600}}


@pytest.fixture
def canary_running(api: httpx.Client, redis: Redis, tmp_path: Path) -> None:
    """examples/mlp with v1 serving and v2's canary running at 30 %."""
    deploy(api, model_spec(tmp_path, "v1"))
    roll_out(redis, "v1")
    deploy(api, model_spec(tmp_path, "v2", **CANARY))
    roll_out(redis, "v2")


def get(api: httpx.Client, path: str) -> Any:
    response = api.get(path)
    assert response.status_code == 200, response.text
    return response.json()


C = f"/v1/contracts/{CONTRACT}"
READS: list[tuple[str, list[str], Callable[[httpx.Client], Any], list[str]]] = [
    ("get contracts", ["get", "contracts"], lambda a: [get(a, C)],
     [CONTRACT, "v1 (serving)", "v2 (phasing-in)", "v1 70%", "v2 30%", "v2 running"]),
    ("get one contract", ["get", "contracts", CONTRACT], lambda a: get(a, C),
     [CONTRACT, "v2 running"]),
    ("get variants of one", ["get", "variants", CONTRACT], lambda a: get(a, f"{C}/variants"),
     ["v1", "serving", "70%", "phasing-in", "30%", "state_dict"]),
    ("get all variants", ["get", "variants"], lambda a: [get(a, f"{C}/variants")],
     [CONTRACT, "phasing-in", "30%"]),
    ("traffic", ["traffic", CONTRACT], lambda a: get(a, f"{C}/traffic"), ["v1 70%", "v2 30%"]),
    ("events", ["events", CONTRACT], lambda a: get(a, f"{C}/events"),
     ["deploy v1", "deploy v2", "rollout v2: step 1"]),
    ("describe", ["describe", CONTRACT],
     lambda a: {"contract": get(a, C), "events": get(a, f"{C}/events")["events"][-10:]},
     ["input FP32 [-1, 4]", "phasing-in", "step", "1/2", "30%", "deploy v2"]),
    ("logs", ["logs", CONTRACT], lambda a: get(a, f"{C}/payloads"), ["TIME", "VARIANT"]),
]


@pytest.mark.parametrize(
    ("name", "args", "want", "shown"), READS, ids=[r[0] for r in READS]
)
@pytest.mark.usefixtures("canary_running")
def test_read_commands_print_the_api_data_as_json_yaml_and_a_table(
    admin: Ffctl,
    api: httpx.Client,
    name: str,
    args: list[str],
    want: Callable[[httpx.Client], Any],
    shown: list[str],
) -> None:
    expected = want(api)
    as_json = admin(*args, "-o", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == expected
    as_yaml = admin(*args, "--output", "yaml")
    assert as_yaml.exit_code == 0, as_yaml.output
    assert yaml.safe_load(as_yaml.stdout) == expected
    table = admin(*args)
    assert table.exit_code == 0, table.output
    for text in shown:
        assert text in table.stdout, (name, text, table.stdout)


def test_the_traffic_table_is_one_plain_line(
    admin: Ffctl, api: httpx.Client, redis: Redis, tmp_path: Path
) -> None:
    deploy(api, model_spec(tmp_path, "v1"))
    roll_out(redis, "v1")
    assert admin("traffic", CONTRACT).stdout == "v1 100%\n"


def test_describe_shows_the_gate_verdict_the_rollout_record_carries(
    admin: Ffctl, api: httpx.Client, redis: Redis, tmp_path: Path
) -> None:
    deploy(api, model_spec(tmp_path, "v1"))
    roll_out(redis, "v1")
    gated = {**CANARY, "gate": {"min_requests": 20, "recheck_seconds": 5}}
    deploy(api, model_spec(tmp_path, "v2", **gated))
    roll_out(redis, "v2")
    def judged(before: Any) -> Any:
        gate = GateVerdict(None, "undecided: 7 candidate requests, need 20", 1.0)
        rollout = replace(before.contract.rollout, gate=gate)
        return replace(before, contract=replace(before.contract, rollout=rollout))

    Store(redis).update(CONTRACT, judged, who="t", what="judge")
    shown = admin("describe", CONTRACT).stdout
    assert "undecided: 7 candidate requests, need 20" in shown
    assert "1/2" in shown and "30%" in shown
