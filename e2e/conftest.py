"""The local platform as a user runs it: `ffctl` in subprocesses, a private state
directory and free ports per platform, and an embedded Redis (REDIS_URL unset)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from tests.support import REPO, free_port

FFCTL = [sys.executable, "-m", "forestflow_cli"]


@dataclass
class LocalPlatform:
    home: Path
    env: dict[str, str]
    api_port: int
    gateway_port: int

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def ffctl(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FFCTL, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def up(self) -> None:
        done = self.ffctl(
            "up", "--api-port", str(self.api_port), "--gateway-port", str(self.gateway_port)
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def tracked_pids(self) -> list[int]:
        files = [*self.home.glob("pids/*.pid"), *self.home.glob("pids/runtimes/*.pid")]
        return [int(f.read_text().split()[0]) for f in files if f.read_text().strip()]

    def runtime_pids(self) -> list[int]:
        return [int(f.read_text()) for f in self.home.glob("pids/runtimes/*.pid")]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def new_platform(work: Path) -> LocalPlatform:
    """A platform of its own under `work`: state directory, free ports, embedded Redis."""
    home = work / "ff"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FF_SERVER")}
    env["FF_HOME"] = str(home)
    return LocalPlatform(home, env, free_port(), free_port())


def new_example(work: Path) -> Path:
    """A copy of examples/mlp with its weights built, retention cut to three seconds."""
    target = work / "mlp"
    weights = shutil.ignore_patterns("*.safetensors")
    shutil.copytree(REPO / "examples" / "mlp", target, ignore=weights)
    subprocess.run([sys.executable, str(target / "build.py")], check=True, capture_output=True)
    spec = yaml.safe_load((target / "model.yaml").read_text())
    spec["variant"]["scaling"]["retention_seconds"] = 3
    (target / "model.yaml").write_text(yaml.safe_dump(spec))
    return target / "model.yaml"


@pytest.fixture
def local_platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    platform = new_platform(tmp_path)
    try:
        yield platform
    finally:
        platform.ffctl("down")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    return new_example(tmp_path)
