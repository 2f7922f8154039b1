"""`pip install forestflow` installs the CLI and the control plane without torch: the model
server's own dependencies are the `runtime` extra, which the tests, `ffctl up` and the runtime
image still get."""

from __future__ import annotations

import re
import tomllib
from typing import Any

from tests.support import REPO

RUNTIME_ONLY = ("torch", "safetensors")
REQUIREMENTS = REPO / "runtime_image" / "requirements.txt"


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return data


def name_of(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower()


def test_a_plain_install_has_none_of_the_runtime_extra() -> None:
    extras = project()["optional-dependencies"]
    assert sorted(name_of(r) for r in extras["runtime"]) == sorted(RUNTIME_ONLY)
    assert "torch==2.13.0" in extras["runtime"]
    assert not {name_of(r) for r in project()["dependencies"]} & set(RUNTIME_ONLY)


def test_dev_pulls_the_runtime_extra() -> None:
    assert "forestflow[runtime]" in project()["optional-dependencies"]["dev"]


def test_the_runtime_image_installs_the_runtime_extra_as_pinned() -> None:
    lines = {line.strip() for line in REQUIREMENTS.read_text().splitlines()}
    assert set(project()["optional-dependencies"]["runtime"]) <= lines
