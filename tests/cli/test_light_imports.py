"""ffctl starts light: reading, describing and a `--dry-run` deploy import neither the
Kubernetes client nor torch, so a CI runner installs and starts ffctl without them. Each
command runs in a fresh interpreter, which then reports the heavy packages it loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Ffctl, model_spec, write_model

HEAVY = ("kubernetes", "torch")
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens there
# Runs ffctl's app on argv[2:] and writes its exit code and the heavy packages it loaded to
# the file argv[1] (stdout is the command's own).
PROBE = f"""
import json, sys
from forestflow_cli.main import app
try:
    app(sys.argv[2:], prog_name="ffctl")
except SystemExit as exit:
    code = exit.code
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r}))
with open(sys.argv[1], "w") as report:
    json.dump({{"code": code, "loaded": loaded}}, report)
"""


@pytest.mark.parametrize(
    ("name", "args", "code"),
    [
        ("help", ["--help"], 0),
        ("get contracts", ["get", "contracts"], 3),
        ("describe", ["describe", "examples/mlp"], 3),
        ("dry run", ["deploy", "{model}", "--dry-run", "--platform", "knative"], 0),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_the_command_imports_neither_kubernetes_nor_torch(
    ffctl: Ffctl, tmp_path: Path, name: str, args: list[str], code: int
) -> None:
    model = write_model(tmp_path, model_spec(tmp_path))
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ffctl.env}
    env.update({k: v for k, v in ffctl.env.items() if v is not None}, FF_SERVER=UNREACHABLE)
    argv = [arg.format(model=model) for arg in args]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *argv],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert result == {"code": code, "loaded": []}, (name, done.stdout, done.stderr)
