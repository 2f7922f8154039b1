"""The gateway's cost: the example MLP called directly on its runtime and through the local
platform's gateway (`ffctl up` as a user runs it), at several concurrencies. The two sides are
measured in interleaved rounds (direct, gateway, then gateway, direct, ...) so that a slow
spell of the machine falls on both alike, and the medians are printed: RPS, p50, p99, errors,
and the gateway process's CPU per request. Then, per concurrency, the p50 the gateway adds
and its share of direct RPS (targets: <= 1 ms added, >= 70 %). The load generator is
runtime_bench.py's: wrk with one thread when installed, else aiohttp, in its own process.
Nothing is pinned: on a small machine the gateway, the runtime and the load generator share
the cores, and the gateway's share of direct RPS says as much about that as about the gateway.

    .venv/bin/python bench/gateway_bench.py [--duration 6] [--rounds 3]
        [--concurrency 1,10,50] [--loadgen auto|wrk|python]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psutil
import yaml
from cold_start import until
from runtime_bench import LoadResult, run_load_process, use_wrk

from forestflow_cli.client import Client
from forestflow_cli.model_files import read_model_file
from forestflow_control_plane.platforms.local.launcher import Launcher
from forestflow_control_plane.platforms.local.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent
SIDES = ("direct", "gateway")


@dataclass(frozen=True)
class Side:
    """One side's medians over the rounds of one concurrency."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    gateway_cpu_us: float  # the gateway process's CPU per request; 0 for direct


def measure(
    urls: dict[str, str], body: Path, level: int, args: argparse.Namespace, gateway: psutil.Process
) -> dict[str, Side]:
    """A warm-up each, then `rounds` runs per side, the order flipped every round."""
    rounds = max(1, min(args.rounds, int(args.duration)))
    seconds = args.duration / rounds
    for url in urls.values():
        run_load_process(url, body, level, min(1.0, args.duration), args.loadgen)
    runs: dict[str, list[tuple[LoadResult, float]]] = {side: [] for side in SIDES}
    for number in range(rounds):
        for side in SIDES if number % 2 == 0 else SIDES[::-1]:
            before = sum(gateway.cpu_times()[:2])
            result = run_load_process(urls[side], body, level, seconds, args.loadgen)
            cpu = sum(gateway.cpu_times()[:2]) - before
            # wrk runs whole seconds (runtime_bench.wrk_load)
            ran = max(1, round(seconds)) if use_wrk(args.loadgen) else seconds
            served = result.rps * ran
            per_request = cpu / served * 1e6 if side == "gateway" and served else 0.0
            runs[side].append((result, per_request))
    return {
        side: Side(
            statistics.median(r.rps for r, _ in rs),
            statistics.median(r.p50_ms for r, _ in rs),
            statistics.median(r.p99_ms for r, _ in rs),
            sum(r.errors for r, _ in rs),
            statistics.median(cpu for _, cpu in rs),
        )
        for side, rs in runs.items()
    }


def deploy(work: Path, launcher: Launcher) -> tuple[str, str]:
    """Deploy the example MLP (retention long enough that the direct rounds, which the
    gateway does not see, never let it dehydrate); return the gateway's and the runtime's
    URLs once the variant is served."""
    example = work / "mlp"
    shutil.copytree(REPO / "examples" / "mlp", example)
    subprocess.run([sys.executable, str(example / "build.py")], check=True, capture_output=True)
    spec = yaml.safe_load((example / "model.yaml").read_text())
    spec["variant"]["scaling"].update(min_replicas=0, max_replicas=1, retention_seconds=3600)
    (example / "model.yaml").write_text(yaml.safe_dump(spec))
    settings = launcher.up(api_port=free_port(), gateway_port=free_port())
    client = Client(settings.api_url, launcher.admin_token())
    try:
        client.deploy(read_model_file(example / "model.yaml"))
    finally:
        client.close()
    gateway = f"{settings.gateway_url}/contracts/examples/mlp/v1/mlp/predict"
    body = orjson.dumps({"input": [[0.5, -1.0, 2.0, 0.25]]})

    def served() -> bool:
        """True once the rollout job has put the variant's traffic on the Route and its
        replica has answered."""
        response = httpx.post(gateway, content=body, timeout=120)
        if response.status_code not in (200, 404):
            raise SystemExit(f"the gateway answered {response.status_code}: {response.text}")
        return response.status_code == 200

    until(served)
    (pid_file,) = (launcher.home / "pids" / "runtimes").glob("*.pid")
    return gateway, f"http://127.0.0.1:{pid_file.stem.rsplit('-', 1)[1]}/v1/mlp/predict"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per side per level")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per level")
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ff-gw-bench-"))
    body = work / "body.json"
    body.write_bytes(orjson.dumps({"input": [[0.5, -1.0, 2.0, 0.25]]}))
    launcher = Launcher(home=work / "home", environ={})
    try:
        gateway_url, direct_url = deploy(work, launcher)
        pid_file = launcher.home / "pids" / "gateway.pid"
        gateway = psutil.Process(int(pid_file.read_text().split()[0]))
        urls = {"direct": direct_url, "gateway": gateway_url}
        generator = "wrk -t1" if use_wrk(args.loadgen) else "aiohttp (python)"
        print(f"load generator: {generator}, closed loop; {os.cpu_count()} cores shared by the "
              "load generator, the gateway and the runtime, nothing pinned")
        print(f"{'conc':>5} {'side':<8} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
              f"{'gw cpu us/req':>13}")
        results: dict[int, dict[str, Side]] = {}
        for level in (int(c) for c in args.concurrency.split(",")):
            results[level] = measure(urls, body, level, args, gateway)
            for side, r in results[level].items():
                cpu = f"{r.gateway_cpu_us:>13.0f}" if side == "gateway" else f"{'':>13}"
                print(f"{level:>5} {side:<8} {r.rps:>8.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
                      f"{r.errors:>6} {cpu}", flush=True)
        rounds = max(1, min(args.rounds, int(args.duration)))
        print(f"\ngateway cost, medians of {rounds} interleaved round(s) "
              "(targets: <= 1 ms added p50, >= 70 % of direct RPS)")
        print(f"{'conc':>5} {'added p50 ms':>13} {'of direct RPS':>14}")
        for level, sides in results.items():
            d, g = sides["direct"], sides["gateway"]
            share = f"{g.rps / d.rps:.0%}" if d.rps else "n/a"
            print(f"{level:>5} {g.p50_ms - d.p50_ms:>13.2f} {share:>14}")
    finally:
        launcher.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
