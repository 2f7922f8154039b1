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
    rows = {line.split("│")[1].strip() for line in out.splitlines() if line.count("│") == 5}
    assert rows == {
        "dehydrated -> next prediction",
        "plain python -m forestflow_runtime -> first prediction",
        "ffctl deploy -> first prediction",
    }
    assert "the < 0.5 s target" in out


def test_runtime_bench() -> None:
    out = run(
        "bench/runtime_bench.py", "--duration", "0.3", "--concurrency", "1", "--models", "dummy"
    )
    assert "dummy c=1 runtime/fastapi p50" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("dummy ")]
    assert {row[1] for row in rows if len(row) == 7} == {"runtime", "fastapi", "raw"}
    assert all(row[-1] == "0" for row in rows if len(row) == 7)  # no errors


def test_gateway_bench() -> None:
    out = run("bench/gateway_bench.py", "--duration", "0.3", "--concurrency", "1,2")
    sides = (["direct"], ["gateway"])
    rows = [row for row in map(str.split, out.splitlines()) if row[1:2] in sides]
    assert sorted((row[0], row[1]) for row in rows) == [
        ("1", "direct"), ("1", "gateway"), ("2", "direct"), ("2", "gateway")
    ]
    assert all(row[5] == "0" for row in rows)  # no errors on either side
    summary = out.split("gateway cost, medians of 1 interleaved round(s)")[1].splitlines()[2:]
    assert [line.split()[0] for line in summary if line.strip()] == ["1", "2"]


def test_faults_bench() -> None:
    out = run("-m", "bench.faults", "--kill-points", "2", "--seed", "3")
    for title in ("faults by process killed", "faults by rollout kind", "failed, and why"):
        assert title in out, out
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines()]
    by_process = next(row for row in rows if row[:1] == ["all"])
    assert by_process[1] == "2" and by_process[5] == "0", out  # two kill points, none stuck
