"""`python -m forestflow_runtime` exactly as the platform starts it: env config, a ready line
on stderr, graceful SIGTERM, non-zero exits that name the problem."""

import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import numpy as np
import orjson
import pytest
import torch

from tests.runtime.runtime_harness import (
    affine_reference,
    free_port,
    metric,
    runtime_process,
    save_affine,
    wait_until,
)


class StderrLines:
    """Collects a process's stderr lines on a thread, so tests can wait for one."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        self.thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@pytest.fixture
def slow_runtime(code_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    weights = save_affine(tmp_path / "w.safetensors", seed=9, delay_s=0.4)
    port = free_port()
    process = runtime_process(
        {
            "FF_MODEL_NAME": "affine",
            "FF_MODEL_URI": f"file://{weights}",
            "FF_MODEL_FORMAT": "state_dict",
            "FF_MODEL_CLASS": "ffnets:Slow",
            "FF_MODEL_CODE_PATH": str(code_dir),
            "FF_PORT": str(port),
            "FF_INPUTS": orjson.dumps(
                [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
            ).decode(),
            "FF_CPU_THREADS": "1",
            "FF_CONTRACT": "tests/affine",
            "FF_VARIANT": "v9",
        }
    )
    yield process, f"http://127.0.0.1:{port}"
    if process.poll() is None:
        process.kill()
    process.wait(10)


def test_subprocess_serves_and_drains_on_sigterm(
    slow_runtime: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = slow_runtime
    stderr = StderrLines(process)
    wait_until(lambda: stderr.has("ready") or process.poll() is not None, 60, "ready line")
    assert process.poll() is None, "".join(stderr.lines)
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    x = [[1.0, 2.0, 3.0, 4.0]]
    outcome: dict[str, httpx.Response] = {}
    in_flight = threading.Thread(
        target=lambda: outcome.update(
            reply=httpx.post(f"{url}/v1/affine/predict", json={"input": x})
        )
    )
    in_flight.start()
    wait_until(
        lambda: metric(httpx.get(f"{url}/metrics").text, "forestflow_inflight_requests") >= 1,
        what="request in flight",
    )
    process.send_signal(signal.SIGTERM)
    in_flight.join(10)
    assert outcome["reply"].status_code == 200
    want = affine_reference(9, torch.tensor(x)).numpy()
    np.testing.assert_allclose(outcome["reply"].json()["output"], want, rtol=1e-5)
    assert process.wait(15) == 0


def test_bad_env_exits_at_once_naming_the_variable() -> None:
    process = runtime_process({"FF_MODEL_NAME": "m", "FF_MODEL_URI": "x", "FF_PORT": "eighty"})
    _, stderr = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "FF_PORT" in stderr


def test_unloadable_model_exits_non_zero(tmp_path: Path) -> None:
    process = runtime_process(
        {
            "FF_MODEL_NAME": "m",
            "FF_MODEL_URI": str(tmp_path / "missing.pt"),
            "FF_PORT": str(free_port()),
        }
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "missing.pt" in stderr and "does not exist" in stderr
