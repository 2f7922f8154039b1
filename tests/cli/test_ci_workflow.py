"""examples/ci/deploy.yml runs only ffctl commands and options that exist, and has the
shape a CI pipeline needs: credentials from secrets, promote on success, rollback on
failure."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from forestflow_cli.main import app
from tests.support import REPO

WORKFLOW = REPO / "examples" / "ci" / "deploy.yml"
GROUPS = ("get", "delete", "config")
# An ffctl call runs to the end of its line, a pipe or the close of a $( ).
CALL = re.compile(r"\bffctl\s+([^|)\n]*)")


def workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def steps() -> list[dict[str, Any]]:
    return list(workflow()["jobs"]["deploy"]["steps"])


def calls() -> list[list[str]]:
    """The argument lists of every ffctl call in the workflow's run scripts."""
    found = []
    for step in steps():
        for match in CALL.finditer(step.get("run", "")):
            found.append(shlex.split(match.group(1), comments=True))
    return found


def command_of(args: list[str]) -> list[str]:
    return args[:2] if args[0] in GROUPS else args[:1]


def test_the_workflow_deploys_waits_promotes_and_rolls_back() -> None:
    used = [" ".join(command_of(args)) for args in calls()]
    assert {"deploy", "promote", "rollback", "describe", "predict"} <= set(used)
    env = workflow()["env"]
    assert env["FF_SERVER"] == "${{ secrets.FF_SERVER }}"
    assert env["FF_TOKEN"] == "${{ secrets.FF_TOKEN }}"
    by_name = {step.get("name", ""): step for step in steps()}
    deploy = next(s for s in steps() if "ffctl deploy" in s.get("run", ""))
    assert "--wait" in deploy["run"] and deploy["id"] == "deploy"
    rollback = next(s for s in steps() if "ffctl rollback" in s.get("run", ""))
    assert rollback["if"].startswith("failure()")
    promote = next(s for s in steps() if "ffctl promote" in s.get("run", ""))
    assert "if" not in promote  # runs only when every step before it succeeded
    assert list(by_name).index(promote["name"]) > list(by_name).index(deploy["name"])


def test_the_runner_installs_ffctl_without_the_runtime() -> None:
    """A runner that only drives rollouts needs no torch: no `runtime` extra."""
    install = next(s for s in steps() if "pip install" in s.get("run", ""))
    assert shlex.split(install["run"]) == ["pip", "install", "forestflow"]


@pytest.mark.parametrize("args", calls(), ids=lambda a: " ".join(a))
def test_every_ffctl_command_and_option_the_workflow_runs_exists(args: list[str]) -> None:
    command = command_of(args)
    shown = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    for option in (a.split("=")[0] for a in args if a.startswith("-")):
        assert re.search(rf"(^|\s){re.escape(option)}\b", shown.stdout), (command, option)
