"""Benchmark the ForestFlow runtime against a naive FastAPI endpoint and a raw uvicorn app.

    python bench/runtime_bench.py [--duration 5] [--concurrency 1,10,50,100]
        [--models dummy,mlp_small,mlp_large] [--servers runtime,fastapi,raw]

Every server runs in its own process on 127.0.0.1; the load generator (aiohttp, closed loop:
each of C workers sends its next request when the previous one answers) runs in another. All
servers answer the same plain JSON body {"input": [[...]]}; the raw uvicorn app answers a
constant without running any model, as the ceiling. Prints RPS, p50, p99 and errors.
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import torch
import uvicorn
from fastapi import FastAPI

MODELS = {"dummy": (128, []), "mlp_small": (768, [256, 3]), "mlp_large": (1024, [4096, 4096, 16])}
SERVERS = ("runtime", "fastapi", "raw")


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def build_model(name: str, directory: Path) -> Path:
    """A TorchScript file: the dummy doubles its input; the MLPs are Linear+ReLU stacks."""
    torch.manual_seed(0)
    width, layers = MODELS[name]
    modules: list[torch.nn.Module] = []
    for out in layers:
        modules += [torch.nn.Linear(width, out), torch.nn.ReLU()]
        width = out
    module = torch.nn.Sequential(*modules[:-1]) if modules else _Double()
    path = directory / f"{name}.pt"
    torch.jit.script(module.eval()).save(str(path))
    return path


class _Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def torch_throughput(model_path: Path, width: int, batch: int, seconds: float = 2.0) -> float:
    """Samples/s of bare forward passes at `batch`: the ceiling any server can approach."""
    model = torch.jit.load(str(model_path)).eval()
    x = torch.rand(batch, width)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            done += batch
    return done / (time.perf_counter() - start)


Results = dict[tuple[str, str, int], LoadResult]


def print_ratios(results: Results, ceiling: dict[str, float]) -> None:
    """The issue's four targets, as ratios of numbers measured in this run."""

    def ratio(model: str, a: str, b: str, level: int, field: str = "rps") -> str:
        ra, rb = results.get((model, a, level)), results.get((model, b, level))
        if ra is None or rb is None or getattr(rb, field) == 0:
            return "n/a"
        return f"{getattr(ra, field) / getattr(rb, field):.2f}"

    print("\ntargets (ratios from this run):")
    print(f"  dummy c=50 runtime/raw rps             {ratio('dummy', 'runtime', 'raw', 50)}"
          "  (>= 0.40)")
    print(f"  mlp_small c=50 runtime/fastapi rps     "
          f"{ratio('mlp_small', 'runtime', 'fastapi', 50)}  (>= 3)")
    print(f"  mlp_large c=50 runtime/fastapi rps     "
          f"{ratio('mlp_large', 'runtime', 'fastapi', 50)}  (>= 6)")
    print(f"  mlp_large c=50 runtime/fastapi p99     "
          f"{ratio('mlp_large', 'runtime', 'fastapi', 50, 'p99_ms')}  (<= 1)")
    large = results.get(("mlp_large", "runtime", 50))
    if large is not None and ceiling.get("mlp_large"):
        print(f"  mlp_large c=50 runtime/torch batch-32  {large.rps / ceiling['mlp_large']:.2f}"
              "  (>= 0.75)")
    for model in MODELS:
        print(f"  {model} c=1 runtime/fastapi p50{' ' * (17 - len(model))}"
              f"{ratio(model, 'runtime', 'fastapi', 1, 'p50_ms')}  (<= 1.2)")


def serve_fastapi(model_path: str, port: int) -> None:
    """The naive baseline: parse with FastAPI, run the model inline, .tolist() the result."""
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


async def generate_load(url: str, body: bytes, concurrency: int, duration_s: float) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration_s
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as reply:
                        await reply.read()
                        ok = reply.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    if not latencies:
        return LoadResult(0.0, float("nan"), float("nan"), errors)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return LoadResult(len(latencies) / elapsed, quantiles[49] * 1e3, quantiles[98] * 1e3, errors)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    kind: str, model: str, model_path: Path, port: int
) -> tuple[subprocess.Popen[bytes], str]:
    """The server process and the URL to POST to, once it answers ready."""
    width = MODELS[model][0]
    if kind == "runtime":
        env = {
            **os.environ,
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
        env = dict(os.environ)
        command = [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--model-path",
            str(model_path),
            "--port",
            str(port),
        ]
        ready, url = ("/ready", "/predict") if kind == "fastapi" else ("/", "/")
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
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


def run_load_process(url: str, body_path: Path, concurrency: int, duration_s: float) -> LoadResult:
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            url,
            "--body",
            str(body_path),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration_s),
        ],
        check=True,
        capture_output=True,
    ).stdout
    return LoadResult(**orjson.loads(output))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,10,50,100")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--serve", choices=("fastapi", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "fastapi":
        serve_fastapi(args.model_path, args.port)
        return
    if args.serve == "raw":
        serve_raw(args.port)
        return
    if args.load:
        body = Path(args.body).read_bytes()
        result = asyncio.run(generate_load(args.load, body, int(args.concurrency), args.duration))
        sys.stdout.write(orjson.dumps(result.__dict__).decode())
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    results: Results = {}
    ceiling: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ff-bench-") as workdir:
        print("{:<10} {:>16} {:>16}".format("model", "torch b=1 /s", "torch b=32 /s"))
        for model in args.models.split(","):
            model_path = build_model(model, Path(workdir))
            one = torch_throughput(model_path, MODELS[model][0], 1)
            ceiling[model] = torch_throughput(model_path, MODELS[model][0], 32)
            print(f"{model:<10} {one:>16.0f} {ceiling[model]:>16.0f}", flush=True)
        columns = ("model", "server", "conc", "rps", "p50 ms", "p99 ms", "errors")
        print("\n{:<10} {:<8} {:>5} {:>9} {:>8} {:>8} {:>6}".format(*columns))
        for model in args.models.split(","):
            model_path = Path(workdir) / f"{model}.pt"
            body_path = Path(workdir) / f"{model}.json"
            row = [round(0.01 * i, 2) for i in range(MODELS[model][0])]
            body_path.write_bytes(orjson.dumps({"input": [row]}))
            for kind in args.servers.split(","):
                process, url = start_server(kind, model, model_path, free_port())
                try:
                    for level in levels:
                        run_load_process(url, body_path, level, min(1.0, args.duration))  # warm
                        r = run_load_process(url, body_path, level, args.duration)
                        results[(model, kind, level)] = r
                        print(
                            f"{model:<10} {kind:<8} {level:>5} {r.rps:>9.0f} {r.p50_ms:>8.2f} "
                            f"{r.p99_ms:>8.2f} {r.errors:>6}",
                            flush=True,
                        )
                finally:
                    process.terminate()
                    process.wait(30)
    print_ratios(results, ceiling)


if __name__ == "__main__":
    main()
