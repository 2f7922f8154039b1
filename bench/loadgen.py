"""The load generators of the benches (runtime_bench.py, gateway_bench.py), each run from a
process of its own and closed loop (each of C connections sends its next request when the
previous one answers): wrk with one thread when it is on PATH, else an aiohttp client (which
itself tops out at a few thousand requests/s).

    python bench/loadgen.py URL --body FILE --concurrency C --duration SECONDS

runs the aiohttp client and prints its LoadResult as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import orjson


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


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
    parser = argparse.ArgumentParser(description="The aiohttp load generator, for one run.")
    parser.add_argument("url")
    parser.add_argument("--body", required=True, help="the request body, a file")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    args = parser.parse_args()
    body = Path(args.body).read_bytes()
    result = asyncio.run(generate_load(args.url, body, args.concurrency, args.duration))
    sys.stdout.write(orjson.dumps(asdict(result)).decode())


if __name__ == "__main__":
    main()
