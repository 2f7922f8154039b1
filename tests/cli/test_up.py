"""`ffctl up` without the runtime's dependencies says what to install, and starts nothing."""

from __future__ import annotations

from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from forestflow_control_plane.platforms.local import launcher

from .conftest import Ffctl


@pytest.mark.parametrize("missing", ["torch", "safetensors"])
def test_up_without_the_runtime_names_the_extra_and_starts_nothing(
    ffctl: Ffctl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    real = launcher.find_spec

    def find_spec(name: str) -> ModuleSpec | None:
        return None if name == missing else real(name)

    monkeypatch.setattr(launcher, "find_spec", find_spec)
    done = ffctl("up")
    assert done.exit_code == 1
    assert (
        f"the local platform runs models with forestflow's runtime, which needs {missing}: "
        "pip install 'forestflow[runtime]'"
    ) in " ".join(done.stderr.split())
    assert not (tmp_path / "ff").exists()
