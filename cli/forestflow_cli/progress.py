"""What a rollout looks like to a person: a pure view of the rollout record the API keeps
on the contract (candidate, step, status, the gate's last verdict), rendered as a Rich
table for a live display or as one line for logs and pipes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table

from forestflow_cli.output import add_row, percents, when

FINISHED = ("succeeded", "rolled_back", "aborted")
# Keys of the gate record that are not measurements: everything else is shown as one.
GATE_NOTES = ("passed", "reason", "at")


@dataclass(frozen=True)
class RolloutView:
    candidate: str
    strategy: str
    status: str
    step: int  # 1-based
    steps: int
    plan: tuple[int, ...]  # the candidate's percent at each step
    percent: int  # the candidate's share now
    traffic: dict[str, int]
    gate: str  # "" when the plan has no gate, else its last verdict
    reason: str
    next_at: float | None


def rollout_view(traffic: dict[str, int], rollout: dict[str, Any] | None) -> RolloutView | None:
    """The view of a contract's rollout as the API answers it (with the candidate's plan)."""
    if rollout is None:
        return None
    progress = rollout["progress"]
    candidate = rollout["candidate"]
    plan = tuple(int(p) for p in rollout["plan"])
    return RolloutView(
        candidate=candidate,
        strategy=str(rollout["strategy"]),
        status=str(progress["status"]),
        step=min(int(progress["step"]), len(plan) - 1) + 1,
        steps=len(plan),
        plan=plan,
        percent=int(traffic.get(candidate, 0)),
        traffic=dict(traffic),
        gate=gate_text(rollout.get("gate")) if rollout["gated"] else "",
        reason=str(progress.get("reason", "")),
        next_at=rollout.get("next_at"),
    )


def gate_text(gate: dict[str, Any] | None) -> str:
    """The gate's last verdict with its reason (which names the metrics it judged), plus any
    measurements the record carries."""
    if gate is None:
        return "not judged yet"
    verdict = {True: "passed", False: "failed", None: "undecided"}[gate.get("passed")]
    reason = str(gate.get("reason", "")).removeprefix("undecided: ")
    extra = "; ".join(f"{k}={v}" for k, v in gate.items() if k not in GATE_NOTES)
    return ": ".join(part for part in (verdict, reason, extra) if part)


def progress_line(view: RolloutView) -> str:
    """One line per change, for pipes and CI logs."""
    if view.strategy == "in_place":
        head = f"in-place swap of {view.candidate}: {view.status}"
    else:
        head = (
            f"rollout of {view.candidate}: {view.status}, step {view.step}/{view.steps} "
            f"at {view.percent}%"
        )
    parts = [head, f"traffic: {percents(view.traffic)}"]
    if view.gate:
        parts.append(f"gate {view.gate}")
    if view.reason and view.status != "running" and view.reason not in view.gate:
        parts.append(view.reason)
    return "; ".join(parts)


def progress_table(view: RolloutView) -> Table:
    """The live display: one row per fact, redrawn in place."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    add_row(table, "rollout", f"{view.candidate} ({view.strategy}): {view.status}")
    if view.strategy != "in_place":
        add_row(table, "step", f"{view.step}/{view.steps} of " + " → ".join(
            f"{p}%" for p in view.plan))
        add_row(table, "percent", f"{view.percent}%")
    add_row(table, "traffic", percents(view.traffic))
    if view.gate:
        add_row(table, "gate", view.gate)
    if view.reason:
        add_row(table, "reason", view.reason)
    if view.next_at and view.status == "running":
        add_row(table, "next step", when(view.next_at))
    return table
