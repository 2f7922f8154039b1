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
(transport errors and non-2xx answers). The servers are servers.py's, the models
torch_models.py's, the load generators loadgen.py's.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import orjson
import torch
from loadgen import LoadResult, run_load_process, use_wrk
from servers import OMP_WAIT_POLICY, free_port, start_server
from torch_models import MODELS, build_model, torch_throughput

SERVERS = ("runtime", "fastapi", "raw")


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
    args = parser.parse_args()
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
