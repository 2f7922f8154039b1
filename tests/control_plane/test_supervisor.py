from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from forestflow_control_plane.platforms.local.processes import ForkedProcess, SpawnedProcess
from forestflow_control_plane.platforms.local.supervisor import (
    HydrationError,
    RuntimeSpec,
    Supervisor,
)
from tests.support import REPO, eventually


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("mlp")
    shutil.copy(REPO / "examples" / "mlp" / "model.py", target)
    shutil.copy(REPO / "examples" / "mlp" / "build.py", target)
    subprocess.run([sys.executable, str(target / "build.py")], check=True, capture_output=True)
    return target


def spec(weights: Path, uri: str | None = None) -> RuntimeSpec:
    env = {
        "FF_MODEL_NAME": "mlp",
        "FF_MODEL_URI": uri or str(weights / "mlp.safetensors"),
        "FF_MODEL_FORMAT": "state_dict",
        "FF_MODEL_CLASS": "model:MLP",
        "FF_MODEL_CODE_PATH": str(weights),
        "FF_INPUTS": '[{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]',
        "FF_OUTPUTS": '[{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]',
    }
    return RuntimeSpec("examples/ff-mlp-v1", env, "/v2/models/mlp/ready")


@pytest.fixture(params=[True, False], ids=["zygote", "spawn"])
async def supervisor(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Supervisor]:
    async with httpx.AsyncClient() as client:
        supervisor = Supervisor(tmp_path, client, use_zygote=request.param)
        await supervisor.open()
        try:
            yield supervisor
        finally:
            await supervisor.close()


async def test_replica_serves_then_stops_and_leaves_no_zombie(
    supervisor: Supervisor, weights: Path, tmp_path: Path
) -> None:
    replica = await supervisor.start(spec(weights), timeout=60)
    expected = ForkedProcess if supervisor._use_zygote else SpawnedProcess
    assert isinstance(replica.process, expected)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            replica.url + "/v1/mlp/predict", json={"input": [[1.0, 2.0, 3.0, 4.0]]}
        )
    assert response.status_code == 200
    assert len(response.json()["output"][0]) == 3
    assert replica.pid_file.exists()
    await supervisor.stop(replica)
    assert not replica.process.running
    assert not replica.pid_file.exists()
    # Exited and reaped: a zygote's child is reaped by the zygote's SIGCHLD handler, soon after.
    eventually(lambda: not psutil.pid_exists(replica.process.pid), 10, "the replica reaped")


async def test_a_killed_replica_is_seen_as_gone(supervisor: Supervisor, weights: Path) -> None:
    replica = await supervisor.start(spec(weights), timeout=60)
    os.kill(replica.process.pid, signal.SIGKILL)
    await replica.process.wait()
    assert not replica.process.running
    await supervisor.stop(replica)


async def test_a_runtime_that_cannot_load_fails_hydration_with_its_log(
    supervisor: Supervisor, weights: Path
) -> None:
    with pytest.raises(HydrationError, match=r"nope\.safetensors"):
        await supervisor.start(spec(weights, uri=str(weights / "nope.safetensors")), timeout=60)


async def test_a_start_cancelled_before_ready_leaves_no_process(
    supervisor: Supervisor, weights: Path, tmp_path: Path
) -> None:
    never_ready = RuntimeSpec("examples/ff-mlp-v1", spec(weights).env, "/no/such/probe")
    starting = asyncio.create_task(supervisor.start(never_ready, timeout=60))
    pid_files = tmp_path / "pids" / "runtimes"
    async with asyncio.timeout(60):
        while not any(pid_files.glob("*.pid")):
            await asyncio.sleep(0.01)
    (pid_file,) = pid_files.glob("*.pid")
    pid = int(pid_file.read_text())
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not pid_file.exists()
    eventually(lambda: not psutil.pid_exists(pid), 10, "the cancelled replica gone")


async def test_several_tasks_can_wait_for_one_replica_to_exit(
    supervisor: Supervisor, weights: Path
) -> None:
    replica = await supervisor.start(spec(weights), timeout=60)
    watchers = [asyncio.create_task(replica.process.wait()) for _ in range(3)]
    await asyncio.sleep(0)  # the watchers are waiting before the stop begins
    await asyncio.wait_for(supervisor.stop(replica), 30)
    await asyncio.wait_for(asyncio.gather(*watchers), 5)
    assert not replica.process.running
