"""The benches stay runnable: each runs once, tiny, and prints its table."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_cold_start_bench() -> None:
    out = run("bench/cold_start.py", "--runs", "1")
    assert "dehydrated -> next prediction" in out


def test_runtime_bench() -> None:
    out = run(
        "bench/runtime_bench.py", "--duration", "0.3", "--concurrency", "1", "--models", "dummy"
    )
    assert "dummy c=1 runtime/fastapi p50" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("dummy ")]
    assert {row[1] for row in rows if len(row) == 7} == {"runtime", "fastapi", "raw"}
    assert all(row[-1] == "0" for row in rows if len(row) == 7)  # no errors


def test_gateway_bench() -> None:
    out = run("bench/gateway_bench.py", "--duration", "0.3", "--concurrency", "1")
    assert "of direct RPS" in out
    rows = [line.split() for line in out.splitlines() if line.split()[1:2] == ["direct"]]
    assert rows and all(row[-1] == "0" for row in rows)
