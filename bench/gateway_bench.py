"""The gateway's cost: the example MLP called directly on its runtime and through the local
platform's gateway, side by side in one run, at several concurrencies (the load generator
of runtime_bench.py, in its own process). Prints RPS, p50, p99 and the ratios.

    .venv/bin/python bench/gateway_bench.py [--duration 4] [--concurrency 1,10,50]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import orjson
from cold_start import until
from runtime_bench import LoadResult, run_load_process

from forestflow_cli.client import Client
from forestflow_cli.model_files import read_model_file
from forestflow_control_plane.platforms.local.launcher import Launcher
from forestflow_control_plane.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--concurrency", default="1,10,50")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ff-gw-bench-"))
    example = work / "mlp"
    shutil.copytree(REPO / "examples" / "mlp", example)
    subprocess.run([sys.executable, str(example / "build.py")], check=True, capture_output=True)
    body = work / "body.json"
    body.write_bytes(orjson.dumps({"input": [[0.5, -1.0, 2.0, 0.25]]}))
    launcher = Launcher(home=work / "home", environ={})
    settings = launcher.up(api_port=free_port(), gateway_port=free_port())
    try:
        client = Client(settings.api_url, launcher.admin_token())
        try:
            client.deploy(read_model_file(example / "model.yaml"))
        finally:
            client.close()
        gateway = f"{settings.gateway_url}/contracts/examples/mlp/v1/mlp/predict"

        def served() -> bool:
            """True once the rollout job has put the variant's traffic on the Route."""
            response = httpx.post(gateway, content=body.read_bytes(), timeout=120)
            if response.status_code not in (200, 404):
                raise SystemExit(f"the gateway answered {response.status_code}: {response.text}")
            return response.status_code == 200

        until(served)
        (pid_file,) = (work / "home" / "pids" / "runtimes").glob("*.pid")
        direct = f"http://127.0.0.1:{pid_file.stem.rsplit('-', 1)[1]}/v1/mlp/predict"
        print(f"{'conc':>5} {'path':<8} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        for level in (int(c) for c in args.concurrency.split(",")):
            results: dict[str, LoadResult] = {}
            for name, url in (("direct", direct), ("gateway", gateway)):
                run_load_process(url, body, level, min(1.0, args.duration))
                r = results[name] = run_load_process(url, body, level, args.duration)
                print(f"{level:>5} {name:<8} {r.rps:>8.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
                      f"{r.errors:>6}", flush=True)
            d, g = results["direct"], results["gateway"]
            print(f"{level:>5} {'gateway':<8} added p50 {g.p50_ms - d.p50_ms:.2f} ms, "
                  f"{g.rps / d.rps:.0%} of direct RPS (targets: <= 1 ms, >= 70 %)", flush=True)
    finally:
        launcher.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
