"""ffctl driven through typer's CliRunner against a real control-plane API on 127.0.0.1 with
a real Redis; each test gets its own config directory and state directory, so neither the
developer's config file nor a local platform they run leaks in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis import Redis
from typer.testing import CliRunner, Result

from forestflow_cli.main import app
from forestflow_control_plane.api.app import create_app
from forestflow_control_plane.api.auth import load_tokens
from forestflow_control_plane.composition import Parts
from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.state.store import Store
from tests.support import REPO, free_port, serving

ADMIN = "admin-token-0123456789"
READER = "read-token-0123456789"
CONTRACT = "examples/mlp"


@dataclass
class Ffctl:
    """ffctl in this process, with an environment of the test's choosing."""

    env: dict[str, str | None]

    def __call__(self, *args: str, env: dict[str, str | None] | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(app, list(args), env={**self.env, **(env or {})})


@pytest.fixture
def ffctl(tmp_path: Path) -> Ffctl:
    """No FF_* variable of the caller's, an empty config directory, no local platform."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("FF_")}
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"), FF_HOME=str(tmp_path / "ff"), COLUMNS="200"
    )
    return Ffctl(env)


@pytest.fixture
def gateway_port() -> int:
    """The port the API names in contract URLs (a test that needs a gateway serves one)."""
    return free_port()


@pytest.fixture
def settings(redis: Redis, redis_url: str, tmp_path: Path, gateway_port: int) -> Settings:
    return Settings(home=tmp_path / "platform", redis_url=redis_url, gateway_port=gateway_port)


@pytest.fixture
def api_url(settings: Settings) -> Iterator[str]:
    tokens = load_tokens({"FF_ADMIN_TOKEN": ADMIN, "FF_READ_TOKEN": READER})
    with serving(create_app(Parts(settings), tokens), free_port()) as url:
        yield url


@pytest.fixture
def admin(ffctl: Ffctl, api_url: str) -> Ffctl:
    """ffctl configured through the environment for the test API, as an admin."""
    return Ffctl({**ffctl.env, "FF_SERVER": api_url, "FF_TOKEN": ADMIN})


@pytest.fixture
def api(api_url: str) -> Iterator[httpx.Client]:
    headers = {"authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=api_url, headers=headers) as client:
        yield client


def model_spec(tmp_path: Path, version: str = "v1", **rollout: Any) -> dict[str, Any]:
    """The example model file with paths that exist (the API checks them, never reads them)."""
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not read by the API")
    spec = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
    spec["variant"]["model"]["uri"] = str(weights)
    spec["variant"]["model"]["python_path"] = str(tmp_path)
    spec["variant"]["version"] = version
    spec["rollout"] = rollout or {"phase_in": {"policy": "immediate"}}
    return dict(spec)


def write_model(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / f"{spec['variant']['version']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def deploy(api: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    response = api.post(
        "/v1/deploy", content=yaml.safe_dump(spec), headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


def roll_out(redis: Redis, version: str, contract: str = CONTRACT) -> None:
    """What the rollout job does, run here instead of in a worker."""
    platform = LocalPlatform(redis, "runtime:test")
    Rollouts(Store(redis), platform, lambda call: None).start(contract, version)


@pytest.fixture
def start_worker(
    redis_url: str, settings: Settings, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A real RQ worker process of the control plane (`python -m forestflow_control_plane
    worker`), stopped with its helpers at the end of the test."""
    workers: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = {**os.environ, **settings.to_env()}
        log = (tmp_path / f"worker-{len(workers)}.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "forestflow_control_plane", "worker"],
            env=env, stdout=log, stderr=log, start_new_session=True,
        )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
