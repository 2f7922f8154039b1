"""Benchmark the ForestFlow runtime against a naive FastAPI endpoint and a raw uvicorn app.

    python bench/runtime_bench.py [--duration 5] [--concurrency 1,10,50,100]
        [--models dummy,mlp_small,mlp_large] [--servers runtime,fastapi,raw]
        [--loadgen auto|wrk|python] [--torch-threads N] [--rounds 3]

Every server runs in its own process on 127.0.0.1; the load generator runs in another, closed
loop (each of C connections sends its next request when the previous one answers): wrk with one
thread when it is on PATH, else an aiohttp client (which itself tops out at a few thousand
requests/s). Nothing is pinned: servers and load generator share the machine's cores alike for
every server. The servers of one model run side by side (idle but for the one under load) and
each concurrency level is measured on all of them in interleaved rounds (see measure_level),
so that ratios compare numbers taken moments apart on a machine whose speed drifts. Both
model servers get the same torch threading (--torch-threads, OMP_WAIT_POLICY); raw torch runs
with the same thread count just before and again just after a model's servers, and the better
of the two is the ceiling.
All servers answer the same plain JSON body {"input": [[...]]}; the raw uvicorn app answers a
constant without running any model, as the ceiling. Prints RPS, p50, p99 and errors
(transport errors and non-2xx answers).
"""

import argparse
import asyncio
import os
import shutil
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
OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")


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
    print(
        f"  dummy c=50 runtime/raw rps             {ratio('dummy', 'runtime', 'raw', 50)}"
        "  (>= 0.40)"
    )
    print(
        f"  mlp_small c=50 runtime/fastapi rps     "
        f"{ratio('mlp_small', 'runtime', 'fastapi', 50)}  (>= 3)"
    )
    print(
        f"  mlp_large c=50 runtime/fastapi rps     "
        f"{ratio('mlp_large', 'runtime', 'fastapi', 50)}  (>= 6)"
    )
    print(
        f"  mlp_large c=50 runtime/fastapi p99     "
        f"{ratio('mlp_large', 'runtime', 'fastapi', 50, 'p99_ms')}  (<= 1)"
    )
    large = results.get(("mlp_large", "runtime", 50))
    if large is not None and ceiling.get("mlp_large"):
        print(
            f"  mlp_large c=50 runtime/torch batch-32  {large.rps / ceiling['mlp_large']:.2f}"
            "  (>= 0.75)"
        )
    for model in MODELS:
        print(
            f"  {model} c=1 runtime/fastapi p50{' ' * (17 - len(model))}"
            f"{ratio(model, 'runtime', 'fastapi', 1, 'p50_ms')}  (<= 1.2)"
        )


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


# wrk's done() hook prints one JSON line; latencies are in microseconds.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(%s, "rb"))
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'FFBENCH {"requests": %%d, "non2xx": %%d, "errors": %%d, "duration_us": %%d, '
    .. '"p50_us": %%.1f, "p99_us": %%.1f}\\n',
    summary.requests, e.status, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_load(url: str, body_path: Path, concurrency: int, duration_s: float) -> LoadResult:
    """One wrk thread (it shares the cores like any client would), C keep-alive connections.

    wrk counts whole seconds; shorter runs are rounded up to one.
    """
    script = body_path.with_suffix(".lua")
    script.write_text(WRK_SCRIPT % orjson.dumps(str(body_path)).decode())
    seconds = max(1, round(duration_s))
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s"]
    output = subprocess.run(
        [*command, "-s", str(script), url], check=True, capture_output=True, text=True
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("FFBENCH "))
    stats = orjson.loads(line.removeprefix("FFBENCH "))
    ok = stats["requests"] - stats["non2xx"]
    if ok <= 0:
        return LoadResult(0.0, float("nan"), float("nan"), stats["errors"])
    return LoadResult(
        ok / (stats["duration_us"] / 1e6),
        stats["p50_us"] / 1e3,
        stats["p99_us"] / 1e3,
        stats["errors"],
    )


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
            "--serve",
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


def use_wrk(choice: str = "auto") -> bool:
    if choice == "python":
        return False
    if choice == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("--loadgen wrk: wrk is not on PATH (apt-get install wrk)")
    return shutil.which("wrk") is not None


def run_load_process(
    url: str, body_path: Path, concurrency: int, duration_s: float, loadgen: str = "auto"
) -> LoadResult:
    """Drive url from another process: wrk when available (see use_wrk), else aiohttp."""
    if use_wrk(loadgen):
        return wrk_load(url, body_path, concurrency, duration_s)
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


def measure_level(
    urls: dict[str, str], body_path: Path, level: int, args: argparse.Namespace
) -> dict[str, LoadResult]:
    """Every server at one concurrency: a warm-up each, then `rounds` short runs interleaved
    (runtime, fastapi, raw, runtime, ...), so that a slow spell of the machine falls on all of
    them alike. RPS is the mean of the rounds, p50 and p99 their medians, errors their sum."""
    rounds = max(1, min(args.rounds, int(args.duration)))
    seconds = args.duration / rounds
    for url in urls.values():
        run_load_process(url, body_path, level, min(1.0, args.duration), args.loadgen)
    runs: dict[str, list[LoadResult]] = {kind: [] for kind in urls}
    for _ in range(rounds):
        for kind, url in urls.items():
            runs[kind].append(run_load_process(url, body_path, level, seconds, args.loadgen))
    return {
        kind: LoadResult(
            statistics.fmean(r.rps for r in rs),
            statistics.median(r.p50_ms for r in rs),
            statistics.median(r.p99_ms for r in rs),
            sum(r.errors for r in rs),
        )
        for kind, rs in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,10,50,100")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per level")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=torch.get_num_threads(),
        help="intra-op threads for the torch ceiling, the runtime and the naive server alike",
    )
    parser.add_argument("--serve", choices=("fastapi", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "fastapi":
        serve_fastapi(args.model_path, args.port, args.torch_threads)
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
    threads = args.torch_threads
    torch.set_num_threads(threads)
    generator = "wrk -t1" if use_wrk(args.loadgen) else "aiohttp (python)"
    print(
        f"load generator: {generator}, closed loop, nothing pinned, {os.cpu_count()} cores\n"
        f"torch: {threads} intra-op threads for the ceiling, the runtime and the naive server "
        f"alike; OMP_WAIT_POLICY={OMP_WAIT_POLICY} for both servers\n"
    )
    columns = ("model", "server", "conc", "rps", "p50 ms", "p99 ms", "errors")
    print("{:<10} {:<8} {:>5} {:>9} {:>8} {:>8} {:>6}".format(*columns))
    kinds = args.servers.split(",")
    with tempfile.TemporaryDirectory(prefix="ff-bench-") as workdir:
        for model in args.models.split(","):
            model_path = build_model(model, Path(workdir))
            one = torch_throughput(model_path, MODELS[model][0], 1)
            ceiling[model] = torch_throughput(model_path, MODELS[model][0], 32)
            print(
                f"{model:<10} raw torch in this process: {one:.0f} samples/s one at a time, "
                f"{ceiling[model]:.0f} in batches of 32",
                flush=True,
            )
            body_path = Path(workdir) / f"{model}.json"
            row = [round(0.01 * i, 2) for i in range(MODELS[model][0])]
            body_path.write_bytes(orjson.dumps({"input": [row]}))
            servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
            try:
                for kind in kinds:
                    servers[kind] = start_server(kind, model, model_path, free_port(), threads)
                for level in levels:
                    urls = {kind: url for kind, (_, url) in servers.items()}
                    for kind, r in measure_level(urls, body_path, level, args).items():
                        results[(model, kind, level)] = r
                        print(
                            f"{model:<10} {kind:<8} {level:>5} {r.rps:>9.0f} {r.p50_ms:>8.2f} "
                            f"{r.p99_ms:>8.2f} {r.errors:>6}",
                            flush=True,
                        )
            finally:
                for process, _ in servers.values():
                    process.terminate()
                for process, _ in servers.values():
                    process.wait(30)
            # Measured again after the servers, and the better of the two kept: a machine that
            # was busy for a moment must not make the ceiling look low and the runtime good.
            again = torch_throughput(model_path, MODELS[model][0], 32)
            ceiling[model] = max(ceiling[model], again)
            print(f"{model:<10} raw torch again: {again:.0f} in batches of 32", flush=True)
    print_ratios(results, ceiling)


if __name__ == "__main__":
    main()
