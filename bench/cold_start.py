"""Cold-start benchmark of the local platform, for the example MLP: from a dehydrated variant
to its first answer through the gateway (the zygote forks a pre-warmed runtime; target
< 0.5 s), beside a plain `python -m forestflow_runtime` started from nothing to its first
answer (interpreter, torch import, model load), and from `ffctl deploy` to the new version's
first answer. Prints a table of medians over N runs.

    .venv/bin/python bench/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import yaml
from rich.console import Console
from rich.table import Table

from forestflow_cli.client import Client
from forestflow_cli.model_files import read_model_file
from forestflow_control_plane.platforms.local.launcher import Launcher
from forestflow_control_plane.platforms.local.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent
INPUT = {"input": [[0.5, 0.5, 0.5, 0.5]]}
TARGET_S = 0.5


def until(check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.005)


def answers(url: str) -> bool:
    try:
        return httpx.post(url, json=INPUT, timeout=120).status_code == 200
    except httpx.TransportError:
        return False


def plain_runtime_start(example: Path) -> float:
    """Seconds from `python -m forestflow_runtime` to its first answer, polled every 5 ms."""
    port = free_port()
    env = {
        **os.environ,
        "FF_MODEL_NAME": "mlp",
        "FF_MODEL_URI": str(example / "mlp.safetensors"),
        "FF_MODEL_FORMAT": "state_dict",
        "FF_MODEL_CLASS": "model:MLP",
        "FF_MODEL_CODE_PATH": str(example),
        "FF_INPUTS": orjson.dumps([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
        .decode(),
        "FF_OUTPUTS": orjson.dumps([{"name": "output", "datatype": "FP32", "shape": [-1, 3]}])
        .decode(),
        "FF_PORT": str(port),
    }
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "forestflow_runtime"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the runtime exited with {process.returncode}")
        return answers(f"http://127.0.0.1:{port}/v1/mlp/predict")

    try:
        until(ready)
        return time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ff-bench-"))
    example = work / "mlp"
    shutil.copytree(REPO / "examples" / "mlp", example)
    subprocess.run([sys.executable, str(example / "build.py")], check=True, capture_output=True)
    launcher = Launcher(home=work / "home", environ={})
    settings = launcher.up(api_port=free_port(), gateway_port=free_port())
    client = Client(settings.api_url, launcher.admin_token())
    url = f"{settings.gateway_url}/contracts/examples/mlp/v1/mlp/predict"
    runtimes = work / "home" / "pids" / "runtimes"
    to_first, from_zero, plain = [], [], []
    try:
        for run in range(1, args.runs + 1):
            spec = yaml.safe_load((example / "model.yaml").read_text())
            spec["variant"]["version"] = f"v{run}"
            spec["variant"]["scaling"]["retention_seconds"] = 1
            path = example / f"model-v{run}.yaml"
            path.write_text(yaml.safe_dump(spec))

            start = time.perf_counter()
            client.deploy(read_model_file(path))

            def served_by_new(version: str = f"v{run}") -> bool:
                response = httpx.post(url, json=INPUT, timeout=120)
                return response.headers.get("x-forestflow-variant") == version

            until(served_by_new)
            to_first.append(time.perf_counter() - start)

            until(lambda: not any(runtimes.glob("*.pid")))
            start = time.perf_counter()
            assert httpx.post(url, json=INPUT, timeout=120).status_code == 200
            from_zero.append(time.perf_counter() - start)
            plain.append(plain_runtime_start(example))
    finally:
        client.close()
        launcher.down()
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"local platform cold start, MLP 4-16-3 ({args.runs} runs)")
    table.add_column("measure")
    table.add_column("median s", justify="right")
    table.add_column("min s", justify="right")
    table.add_column("max s", justify="right")
    for name, values in (
        ("dehydrated -> next prediction", from_zero),
        ("plain python -m forestflow_runtime -> first prediction", plain),
        ("ffctl deploy -> first prediction", to_first),
    ):
        table.add_row(
            name, f"{statistics.median(values):.3f}", f"{min(values):.3f}", f"{max(values):.3f}"
        )
    Console(width=120).print(table)
    verdict = "meets" if statistics.median(from_zero) < TARGET_S else "misses"
    print(f"dehydrated -> next prediction {verdict} the < {TARGET_S} s target")


if __name__ == "__main__":
    main()
