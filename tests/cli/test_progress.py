"""The rollout as `deploy --wait` and `describe` show it: a pure view of the rollout record,
one line per change for pipes, and a Rich Live table on a terminal."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from forestflow_cli import follow
from forestflow_cli.progress import progress_line, progress_table, rollout_view


def plan(*percents: int, gated: bool = False) -> dict[str, Any]:
    """What the API adds to a rollout record: the candidate's schedule and its gate."""
    return {"plan": list(percents), "gated": gated}


def record(status: str = "running", step: int = 0, reason: str = "",
           **extra: Any) -> dict[str, Any]:
    progress = {"candidate": "v2", "previous": {"v1": 100}, "step": step, "started_at": 1.0,
                "step_started_at": 1.0, "status": status, "reason": reason}
    return {"candidate": "v2", "strategy": "revision", "progress": progress, "token": 3,
            "next_at": None, **extra}


CANARY = plan(25, 50, 100)
GATED = plan(50, 100, gated=True)
UNDECIDED = {"passed": None, "reason": "undecided: 3 candidate requests, need 20", "at": 2.0}
REASON = "p95_latency_ms 80 ms over SLO 50 ms"
FAILED = {"passed": False, "reason": REASON, "at": 2.0}
PASSED = {"passed": True, "reason": "within SLO", "at": 2.0,
          "metrics": {"p95_latency_ms": 12.5, "requests": 40}}

LINES = [
    ("first canary step", {"v1": 75, "v2": 25}, record(), CANARY,
     "rollout of v2: running, step 1/3 at 25%; traffic: v1 75%, v2 25%"),
    ("a later step", {"v1": 50, "v2": 50}, record(step=1), CANARY,
     "rollout of v2: running, step 2/3 at 50%; traffic: v1 50%, v2 50%"),
    ("gated, not judged yet", {"v1": 50, "v2": 50}, record(), GATED,
     "rollout of v2: running, step 1/2 at 50%; traffic: v1 50%, v2 50%; gate not judged yet"),
    ("gated, undecided", {"v1": 50, "v2": 50}, record(gate=UNDECIDED), GATED,
     "rollout of v2: running, step 1/2 at 50%; traffic: v1 50%, v2 50%; "
     "gate undecided: 3 candidate requests, need 20"),
    ("gate passed with its metrics", {"v2": 100, "v1": 0}, record(step=1, gate=PASSED), GATED,
     "rollout of v2: running, step 2/2 at 100%; traffic: v2 100%, v1 0%; gate passed: "
     "within SLO: metrics={'p95_latency_ms': 12.5, 'requests': 40}"),
    ("gate failed, rolled back", {"v1": 100, "v2": 0},
     record("rolled_back", reason=REASON, gate=FAILED), GATED,
     "rollout of v2: rolled_back, step 1/2 at 0%; traffic: v1 100%, v2 0%; "
     "gate failed: p95_latency_ms 80 ms over SLO 50 ms"),
    ("paused", {"v1": 75, "v2": 25}, record("paused", reason="pause by admin"), CANARY,
     "rollout of v2: paused, step 1/3 at 25%; traffic: v1 75%, v2 25%; pause by admin"),
    ("linear ramp", {"v1": 50, "v2": 50}, record(step=1), plan(25, 50, 75, 100),
     "rollout of v2: running, step 2/4 at 50%; traffic: v1 50%, v2 50%"),
    ("immediate", {"v2": 100}, record("succeeded"), plan(100),
     "rollout of v2: succeeded, step 1/1 at 100%; traffic: v2 100%"),
    ("in place", {"v2": 100}, record("rolled_back", reason="replica 1 did not start",
                                     strategy="in_place"), plan(100),
     "in-place swap of v2: rolled_back; traffic: v2 100%; replica 1 did not start"),
]


@pytest.mark.parametrize(("name", "traffic", "rollout", "variant", "want"), LINES,
                         ids=[row[0] for row in LINES])
def test_one_line_per_state(
    name: str, traffic: dict[str, int], rollout: dict[str, Any], variant: dict[str, Any],
    want: str,
) -> None:
    view = rollout_view(traffic, {**rollout, **variant})
    assert view is not None
    assert progress_line(view) == want


def test_no_rollout_has_no_view() -> None:
    assert rollout_view({"v1": 100}, None) is None


def rendered(renderable: Any) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    console.print(renderable)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return str(text)


def test_the_live_table_shows_step_percent_gate_and_next_step() -> None:
    rollout = {**record(gate=UNDECIDED), "next_at": 2 * 86_400.0}
    view = rollout_view({"v1": 50, "v2": 50}, {**rollout, **GATED})
    assert view is not None
    text = rendered(progress_table(view))
    for row in ("v2 (revision): running", "1/2 of 50% → 100%", "50%", "v1 50%, v2 50%",
                "undecided: 3 candidate requests, need 20", "1970-01-03"):
        assert row in text, (row, text)


def test_a_terminal_gets_a_live_view_and_a_pipe_gets_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view = rollout_view({"v1": 50, "v2": 50}, {**record(gate=FAILED), **GATED})
    assert view is not None
    monkeypatch.setattr(follow, "out", Console(file=io.StringIO(), force_terminal=False))
    with follow.reporter() as piped:
        assert isinstance(piped, follow.LineReporter)
    terminal = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    monkeypatch.setattr(follow, "out", terminal)
    with follow.reporter() as live:
        assert isinstance(live, follow.LiveReporter)
        live.show(view)
        live.show(view)
    drawn = terminal.file.getvalue()  # type: ignore[attr-defined]
    assert "gate" in drawn and "failed: p95_latency_ms 80 ms over SLO 50 ms" in drawn
