"""The exit codes a CI pipeline relies on: 2 for bad input (a bad model file, an unknown
contract, a refused change, bad arguments), 3 when the API cannot be reached or refuses the
token. (1, a failed rollout, is in test_deploy.)"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import free_port

from .conftest import CONTRACT, READER, Ffctl, deploy, model_spec


@pytest.mark.parametrize(
    ("name", "path", "value", "field"),
    [
        ("missing field", ("variant", "version"), None, "variant.version"),
        ("unknown format", ("variant", "model", "format"), "pickle", "variant.model.format"),
        ("misspelt field", ("variant", "bacthing"), {}, "variant.bacthing"),
        ("no such weights", ("variant", "model", "uri"), "/no/such.safetensors",
         "variant.model.uri"),
    ],
)
def test_a_bad_model_file_exits_2_naming_the_field_and_stores_nothing(
    admin: Ffctl, api: httpx.Client, tmp_path: Path, name: str, path: tuple[str, ...],
    value: object, field: str,
) -> None:
    spec = model_spec(tmp_path)
    *parents, last = path
    node = spec
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    done = admin("deploy", str(bad))
    assert done.exit_code == 2, (name, done.output)
    assert field in done.stderr, (name, done.stderr)
    assert done.stdout == ""
    assert api.get("/v1/contracts").json() == {"contracts": []}


def test_a_file_that_is_not_yaml_exits_2(admin: Ffctl, tmp_path: Path) -> None:
    bad = tmp_path / "model.yaml"
    bad.write_text("contract: [")
    done = admin("deploy", str(bad))
    assert done.exit_code == 2
    assert "not valid YAML" in done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["traffic", "no/such"], "contract 'no/such' not found"),
        (["describe", "no/such"], "not found"),
        (["logs", "no/such"], "not found"),
        (["get", "variants", "no/such"], "not found"),
        (["predict", "no/such", "--input", "[[1, 2, 3, 4]]"], "not found"),
        (["delete", "variant", CONTRACT, "v9"], "variant examples/mlp@v9 not found"),
        (["pause", CONTRACT], "no rollout to pause"),
        (["traffic", "mlp"], "expected namespace/name"),
        (["get", "contracts", "-o", "xml"], "xml"),
        (["predict", CONTRACT], "exactly one of --input or --file"),
        (["predict", CONTRACT, "--input", "[[1, 2]]"], "shape [1, 2] does not fit"),
        (["predict", CONTRACT, "--input", "[[1, 2"], "--input: not valid JSON"),
        (["predict", CONTRACT, "--input", "[[1, 2, 3, 4]]", "--version", "v7"], "no version"),
        (["predict", CONTRACT, "-i", "[[1, 2, 3, 4]]", "--version", "v1"],
         "examples/mlp@v1 is pending: it has no route"),
    ],
)
def test_unknown_names_refusals_and_bad_arguments_exit_2(
    admin: Ffctl, api: httpx.Client, tmp_path: Path, args: list[str], said: str
) -> None:
    deploy(api, model_spec(tmp_path))
    done = admin(*args)
    assert done.exit_code == 2, done.output
    assert said in done.stderr, done.stderr
    assert done.stdout == ""


def test_an_unreachable_api_exits_3(ffctl: Ffctl) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    for args in (["get", "contracts"], ["traffic", CONTRACT], ["promote", CONTRACT]):
        done = ffctl(*args, "--server", server)
        assert done.exit_code == 3, done.output
        assert f"cannot reach the API at {server}" in done.stderr


@pytest.mark.parametrize(
    ("args", "token", "status"),
    [
        (["get", "contracts"], None, "401"),
        (["get", "contracts"], "not-a-known-token-at-all", "401"),
        (["promote", CONTRACT], READER, "403"),
        (["delete", "contract", CONTRACT], READER, "403"),
    ],
)
def test_a_refused_token_exits_3(
    ffctl: Ffctl, api_url: str, args: list[str], token: str | None, status: str
) -> None:
    flags = ["--token", token] if token else []
    done = ffctl(*args, "--server", api_url, *flags)
    assert done.exit_code == 3, done.output
    assert f"({status})" in done.stderr


def test_a_reader_token_reads(ffctl: Ffctl, api_url: str) -> None:
    done = ffctl("get", "contracts", "--server", api_url, "--token", READER, "-o", "json")
    assert (done.exit_code, done.stdout) == (0, "[]\n")


def test_a_malformed_config_file_exits_2_naming_it(ffctl: Ffctl, tmp_path: Path) -> None:
    path = tmp_path / "config" / "forestflow" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({"sever": "http://x"}))
    done = ffctl("get", "contracts")
    assert done.exit_code == 2
    assert f"{path}: sever: unknown key" in done.stderr


def test_status_of_a_platform_that_is_down_exits_3(ffctl: Ffctl) -> None:
    done = ffctl("status", "-o", "json")
    assert done.exit_code == 3
    assert json.loads(done.stdout) == {"up": False, "api": None, "gateway": None}
    assert ffctl("status").stdout == "ForestFlow is down\n"
