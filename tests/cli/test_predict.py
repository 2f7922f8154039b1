"""`ffctl predict` through a real gateway to real runtime processes: the contract URL the API
gives (its split decides the version) or one version's tag route; input from --input, a
.json or a .npy file, shaped by the contract's spec. The runtimes log their payloads, which
`ffctl logs` then shows."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import yaml
from redis import Redis
from safetensors.torch import load_file

from forestflow_cli.predict import InputError, infer_request, infer_url
from forestflow_control_plane.platforms.local.gateway.app import Gateway
from forestflow_control_plane.settings import Settings
from tests.support import REPO, serving

from .conftest import CONTRACT, Ffctl, deploy, roll_out

ROWS = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]
FLAT = [x for row in ROWS for x in row]
SPECS = [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example MLP with its weights built."""
    target = tmp_path_factory.mktemp("mlp")
    for name in ("model.py", "build.py"):
        shutil.copy(REPO / "examples" / "mlp" / name, target)
    subprocess.run([sys.executable, str(target / "build.py")], check=True, capture_output=True)
    return target


def reference(mlp: Path) -> list[float]:
    """The example's outputs for ROWS, computed here with torch, flattened."""
    spec = importlib.util.spec_from_file_location("ffmlp_reference", mlp / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.MLP()
    model.load_state_dict(load_file(str(mlp / "mlp.safetensors")))
    with torch.inference_mode():
        return list(model(torch.tensor(ROWS)).flatten().tolist())


def mlp_spec(mlp: Path, version: str, **rollout: Any) -> dict[str, Any]:
    spec = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
    spec["variant"]["model"].update(uri=str(mlp / "mlp.safetensors"), python_path=str(mlp))
    spec["variant"]["version"] = version
    spec["variant"]["payload_logging"] = {"sample_rate": 1.0}
    spec["rollout"] = rollout or {"phase_in": {"policy": "immediate"}}
    return dict(spec)


@pytest.fixture
def served(
    api: httpx.Client, redis: Redis, settings: Settings, mlp: Path
) -> Iterator[None]:
    """v1 serving 100 % behind a real gateway on the port the API's URLs name, and v2 with
    a tag route but no share of the traffic yet (a canary at its first step, held)."""
    deploy(api, mlp_spec(mlp, "v1"))
    roll_out(redis, "v1")
    canary = {"phase_in": {"policy": "canary", "steps": [1, 100], "hold_seconds": 3600}}
    deploy(api, mlp_spec(mlp, "v2", **canary))
    with serving(Gateway(settings, hydrate_timeout=60), settings.gateway_port):
        yield


def outputs(answer: dict[str, Any]) -> list[float]:
    (tensor,) = answer["outputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("output", "FP32", [2, 3])
    return list(np.ravel(tensor["data"]))


@pytest.mark.usefixtures("served")
def test_predict_through_the_gateway_from_json_and_npy_and_by_version(
    admin: Ffctl, redis: Redis, mlp: Path, tmp_path: Path
) -> None:
    want = reference(mlp)
    answer = admin("predict", CONTRACT, "--input", json.dumps(ROWS), "-o", "json")
    assert answer.exit_code == 0, answer.output
    assert outputs(json.loads(answer.stdout)) == pytest.approx(want, abs=1e-6)

    npy = tmp_path / "rows.npy"
    np.save(npy, np.asarray(ROWS, dtype=np.float32))
    from_npy = admin("predict", CONTRACT, "--file", str(npy), "-o", "yaml")
    assert outputs(yaml.safe_load(from_npy.stdout)) == pytest.approx(want, abs=1e-6)

    named = tmp_path / "rows.json"
    named.write_text(json.dumps({"input": ROWS}))
    table = admin("predict", CONTRACT, "--file", str(named))
    assert table.exit_code == 0, table.output
    assert "examples/mlp @ v1" in table.stdout and "[2, 3]" in table.stdout

    roll_out(redis, "v2")  # v2 takes 1 %: its tag route reaches it every time
    for _ in range(3):
        tagged = admin("predict", CONTRACT, "-i", json.dumps(ROWS), "--version", "v2")
        assert tagged.exit_code == 0, tagged.output
        assert "examples/mlp @ v2" in tagged.stdout

    logged = json.loads(admin("logs", CONTRACT, "-o", "json").stdout)["events"]
    assert [e["variant"] for e in logged][-4:] == ["v1", "v2", "v2", "v2"]
    assert logged[-1]["inputs"]["input"] == {"shape": [2, 4], "data": FLAT}


@pytest.mark.usefixtures("served")
def test_a_request_the_model_refuses_exits_2_and_a_dead_gateway_3(
    admin: Ffctl, ffctl: Ffctl, api_url: str
) -> None:
    wrong = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 5],
                         "data": [1, 2, 3, 4, 5]}]}
    refused = admin("predict", CONTRACT, "--input", json.dumps(wrong))
    assert refused.exit_code == 2, refused.output
    assert "(4" in refused.stderr and "input" in refused.stderr
    dead = admin("predict", CONTRACT, "-i", json.dumps(ROWS), "--gateway", "http://127.0.0.1:9")
    assert dead.exit_code == 3
    assert "cannot reach the gateway at http://127.0.0.1:9/contracts/examples/mlp/" in dead.stderr


@pytest.mark.parametrize(
    ("name", "value", "want"),
    [
        ("the only input's data", ROWS,
         {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                      "data": FLAT}]}),
        ("by name", {"input": [[1, 2, 3, 4]]},
         {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                      "data": [1.0, 2.0, 3.0, 4.0]}]}),
        ("a whole request as it is", {"inputs": [{"name": "x"}]}, {"inputs": [{"name": "x"}]}),
        ("an array from a .npy", np.ones((1, 4), dtype=np.float64),
         {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                      "data": [1.0] * 4}]}),
    ],
)
def test_requests_take_names_datatypes_and_shapes_from_the_contract(
    name: str, value: Any, want: dict[str, Any]
) -> None:
    assert infer_request(SPECS, value) == want, name


TWO = [*SPECS, {"name": "mask", "datatype": "BOOL", "shape": [-1]}]


@pytest.mark.parametrize(
    ("name", "specs", "value", "said"),
    [
        ("wrong width", SPECS, [[1, 2, 3]], "input 'input': shape [1, 3] does not fit"),
        ("wrong rank", SPECS, [1, 2, 3, 4], "shape [4] does not fit the contract's [-1, 4]"),
        ("not numbers", SPECS, [["a", "b", "c", "d"]], "input 'input': not a FP32 tensor"),
        ("ragged", SPECS, [[1, 2, 3, 4], [1]], "input 'input': not a FP32 tensor"),
        ("two inputs, one array", TWO, ROWS, "the contract has 2 inputs (input, mask)"),
        ("unknown name", SPECS, {"inputs_": ROWS}, "unknown ['inputs_'], missing ['input']"),
        ("missing name", TWO, {"input": ROWS}, "missing ['mask']"),
    ],
)
def test_input_that_does_not_fit_is_named(
    name: str, specs: list[dict[str, Any]], value: Any, said: str
) -> None:
    with pytest.raises(InputError, match=None) as raised:
        infer_request(specs, value)
    assert said in str(raised.value), name


@pytest.mark.parametrize(
    ("version", "gateway", "want"),
    [
        (None, None, "http://gw.api:8080/contracts/fraud/scoring/v2/models/scoring/infer"),
        ("v3", None, "http://gw.api:8080/contracts/fraud/v3-scoring/v2/models/scoring/infer"),
        (None, "http://mine:1/", "http://mine:1/contracts/fraud/scoring/v2/models/scoring/infer"),
    ],
)
def test_the_infer_url_is_the_contracts_or_a_versions_tag_route(
    version: str | None, gateway: str | None, want: str
) -> None:
    contract = {"name": "fraud/scoring", "url": "http://gw.api:8080/contracts/fraud/scoring"}
    assert infer_url(contract, version, gateway) == want
