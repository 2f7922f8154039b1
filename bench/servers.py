"""The servers runtime_bench.py measures, each in a process of its own on 127.0.0.1: the
ForestFlow runtime, a naive FastAPI endpoint and a raw uvicorn app that answers a constant
(the ceiling). All answer the same plain JSON body {"input": [[...]]}.

    python bench/servers.py fastapi|raw --port N [--model-path FILE] [--torch-threads N]

serves one of the two baselines.
"""

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import torch
import uvicorn
from fastapi import FastAPI
from torch_models import MODELS

OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
# A bound, not a budget: the runtime imports torch, slow on a loaded machine.
READY_TIMEOUT_S = 180.0


def serve_fastapi(model_path: str, port: int, threads: int) -> None:
    """The naive baseline: parse with FastAPI, run the model inline, .tolist() the result."""
    torch.set_num_threads(threads)
    model = torch.jit.load(model_path).eval()
    app = FastAPI()

    @app.post("/predict")
    async def predict(payload: dict[str, Any]) -> dict[str, Any]:
        x = torch.tensor(payload["input"], dtype=torch.float32)
        with torch.inference_mode():
            return {"output": model(x).tolist()}

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_raw(port: int) -> None:
    """The ceiling: a bare ASGI app that reads the body and answers a constant."""

    body = orjson.dumps({"output": [[0.0]]})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        while message.get("more_body"):
            message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    kind: str, model: str, model_path: Path, port: int, threads: int
) -> tuple[subprocess.Popen[bytes], str]:
    """The server process and the URL to POST to, once it answers ready."""
    width = MODELS[model][0]
    # Both model servers get the same torch threading: the runtime's own default wait policy
    # (idle OpenMP threads sleep rather than spin) is given to the naive server too.
    base_env = {**os.environ, "OMP_WAIT_POLICY": OMP_WAIT_POLICY}
    if kind == "runtime":
        env = {
            **base_env,
            "FF_CPU_THREADS": str(threads),
            "FF_MODEL_NAME": model,
            "FF_MODEL_URI": str(model_path),
            "FF_PORT": str(port),
            "FF_INPUTS": orjson.dumps(
                [{"name": "x", "datatype": "FP32", "shape": [-1, width]}]
            ).decode(),
        }
        command = [sys.executable, "-m", "forestflow_runtime"]
        ready, url = "/v2/health/ready", f"/v1/{model}/predict"
    else:
        env = base_env
        command = [
            sys.executable,
            __file__,
            kind,
            "--model-path",
            str(model_path),
            "--port",
            str(port),
            "--torch-threads",
            str(threads),
        ]
        ready, url = ("/ready", "/predict") if kind == "fastapi" else ("/", "/")
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if httpx.get(base + ready).status_code == 200:
                return process, base + url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"{kind} server did not become ready")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description="One baseline server, for start_server.")
    parser.add_argument("kind", choices=("fastapi", "raw"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-path", help="the TorchScript file (fastapi)")
    parser.add_argument("--torch-threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if args.kind == "fastapi":
        serve_fastapi(args.model_path, args.port, args.torch_threads)
    else:
        serve_raw(args.port)


if __name__ == "__main__":
    main()
