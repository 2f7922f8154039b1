"""Helpers for runtime tests: tiny real models on disk and real servers on 127.0.0.1, and gates
that hold a model's calls until the test lets them through."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import itertools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import torch
from safetensors.torch import save_file

from forestflow_runtime.app import RuntimeApp
from forestflow_runtime.config import (
    BatchingConfig,
    ModelFormat,
    ModelSource,
    RuntimeConfig,
    TensorSpec,
)
from forestflow_runtime.server import build_server
from tests.runtime.turnstile import Turnstile

REPO = Path(__file__).resolve().parents[2]
INPUT_4 = (TensorSpec("x", "FP32", (-1, 4)),)
NETS_MODULE = '''
import threading
import time

import torch

GATES = {}  # gate number -> the test's runtime_harness.Gate that a Gated model's calls pass


class Affine(torch.nn.Module):
    """4 -> 3 linear layer."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x)


class Threads(Affine):
    """Affine whose outputs all read torch.get_num_threads() on the thread that runs it."""

    def forward(self, x):
        return self.linear(x) * 0 + torch.get_num_threads()


class Slow(Affine):
    """Affine that sleeps `delay` seconds per call (a buffer, so weights decide it)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("delay", torch.zeros(()))

    def forward(self, x):
        time.sleep(float(self.delay))
        return self.linear(x)


class Stuck(Affine):
    """Affine that answers its first call (the warm-up), then holds every later call until
    its process ends: for a runtime process a test kills with messages read, none answered."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            threading.Event().wait()
        return self.linear(x)


class Gated(Affine):
    """Affine whose every call, warm-up included, first passes GATES[gate] (a buffer)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gate", torch.zeros(()))

    def forward(self, x):
        GATES[int(self.gate)]()
        return self.linear(x)
'''
# How long a Gated call waits for the test before it fails: a test that forgot it never hangs.
GATE_HOLD_S = 60.0
# How long a wait for something that does happen (a server up, a request queued) may take
# before the test fails rather than hangs: a bound for a loaded machine, never the assertion.
GUARD_S = 60.0
_gate_numbers = itertools.count(1)


def write_nets_module(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ffnets.py").write_text(NETS_MODULE)
    return directory


def affine_weights(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "linear.weight": torch.randn(3, 4, generator=generator),
        "linear.bias": torch.randn(3, generator=generator),
    }


def save_affine(path: Path, seed: int, delay_s: float | None = None) -> Path:
    """Safetensors weights for ffnets.Affine, or ffnets.Slow when delay_s is given."""
    weights = affine_weights(seed)
    if delay_s is not None:
        weights["delay"] = torch.tensor(delay_s)
    save_file(weights, str(path))
    return path


def nets_module(code_dir: Path) -> ModuleType:
    """ffnets as the runtime imports it in this process (code_dir first on sys.path)."""
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    return importlib.import_module("ffnets")


class Gate(Turnstile):
    """Holds each call of an ffnets.Gated model until the test lets it through; ffnets finds
    it by its number."""

    def __init__(self, code_dir: Path) -> None:
        self.number = next(_gate_numbers)
        super().__init__(f"gate {self.number}", GATE_HOLD_S)
        nets_module(code_dir).GATES[self.number] = self

    def __call__(self) -> None:
        self.pass_through()


def save_gated(path: Path, seed: int, gate: Gate) -> Path:
    """Safetensors weights for ffnets.Gated, whose calls pass `gate`."""
    weights = affine_weights(seed)
    weights["gate"] = torch.tensor(float(gate.number))
    save_file(weights, str(path))
    return path


def affine_reference(seed: int, x: torch.Tensor) -> torch.Tensor:
    weights = affine_weights(seed)
    return x @ weights["linear.weight"].T + weights["linear.bias"]


def state_dict_config(
    code_dir: Path, weights: Path, slow: bool = False, gated: bool = False, **batching: Any
) -> RuntimeConfig:
    """ffnets.Affine's config; ffnets.Slow's if `slow`, ffnets.Gated's if `gated`."""
    model_class = "ffnets:Gated" if gated else "ffnets:Slow" if slow else "ffnets:Affine"
    return RuntimeConfig(
        model_name="affine",
        source=ModelSource(
            uri=str(weights),
            format=ModelFormat.STATE_DICT,
            model_class=model_class,
            code_path=code_dir,
        ),
        inputs=INPUT_4,
        outputs=(TensorSpec("y", "FP32", (-1, 3)),),
        batching=dataclasses.replace(BatchingConfig(), **batching),
        port=0,
        contract="tests/affine",
        variant="v1",
    )


def wait_until(predicate: Callable[[], bool], timeout_s: float = GUARD_S, what: str = "") -> None:
    """Poll a readiness condition (10 ms apart) rather than sleeping a fixed time."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)


@dataclasses.dataclass
class RunningServer:
    app: RuntimeApp
    url: str
    stop: Callable[[], None]
    """Begin uvicorn's graceful shutdown without waiting for it (leaving the block waits)."""

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/v2/health/ready").status_code == 200


@contextmanager
def running_server(config: RuntimeConfig, wait_ready: bool = True) -> Iterator[RunningServer]:
    """uvicorn in a background thread on a free port; stopped (gracefully) on exit."""
    app = RuntimeApp(config)
    server = build_server(config, app)
    thread = threading.Thread(target=server.run, name="runtime-under-test", daemon=True)

    def stop() -> None:
        server.should_exit = True

    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn start")
        assert server.started, "uvicorn failed to start"
        port = server.servers[0].sockets[0].getsockname()[1]
        running = RunningServer(app, f"http://127.0.0.1:{port}", stop)
        if wait_ready:
            wait_until(running.ready, what="model ready")
        yield running
    finally:
        stop()
        thread.join(timeout=GUARD_S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def runtime_process(env: dict[str, str]) -> subprocess.Popen[str]:
    """`python -m forestflow_runtime` as the platform's supervisor starts it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FF_")}
    full_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "forestflow_runtime"],
        env=full_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples (all label sets) in Prometheus text."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


async def until_inflight(client: httpx.AsyncClient, count: int) -> None:
    """Wait until the server has admitted `count` inference requests (queued or running)."""
    deadline = time.monotonic() + GUARD_S
    while metric((await client.get("/metrics")).text, "forestflow_inflight_requests") < count:
        assert time.monotonic() < deadline, f"never saw {count} requests in flight"
        await asyncio.sleep(0.005)
