"""The phase-in plan and gate a variant's stored spec asks for: read here and nowhere else,
so the rollout job, the API's views and the CLI agree on every step."""

from __future__ import annotations

from typing import Any

from forestflow_control_plane.policies.gates import SLO, Gate
from forestflow_control_plane.policies.phase_in import Canary, Immediate, Linear, Plan


def plan_of(spec: dict[str, Any]) -> Plan:
    """The phase-in plan, gated or not, of a variant's stored model-file spec."""
    phase = spec["rollout"]["phase_in"]
    gate = gate_of(spec)
    if phase["policy"] == "canary":
        return Canary(tuple(phase["steps"]), phase["hold_seconds"], gate)
    if phase["policy"] == "linear":
        return Linear(phase["duration_seconds"], phase["interval_seconds"], gate)
    return Immediate(gate)


def gate_of(spec: dict[str, Any]) -> Gate | None:
    settings = spec["rollout"].get("gate")
    if settings is None:
        return None
    slo = spec.get("slo") or {}
    return Gate(
        SLO(slo.get("p95_latency_ms"), slo.get("error_rate")),
        margin=settings["margin"],
        min_requests=settings["min_requests"],
        recheck_seconds=settings["recheck_seconds"],
    )


def schedule_of(plan: Plan) -> tuple[int, ...]:
    """The candidate's percent at each step of `plan`."""
    return tuple(plan.percent(step) for step in range(plan.last_step() + 1))
