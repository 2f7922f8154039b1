"""What the API answers about rollouts, as models: the stored record plus what it means
under the candidate's plan (its schedule, whether it is gated), so a client reads the plan
instead of re-deriving it from policy internals."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from forestflow_control_plane.policies.plans import plan_of, schedule_of
from forestflow_control_plane.state.records import ContractSnapshot, RolloutRecord


class GateOut(BaseModel):
    passed: bool | None = Field(description="None: undecided")
    reason: str
    at: float


class ProgressOut(BaseModel):
    candidate: str
    previous: dict[str, int] = Field(description="the split before the rollout began")
    step: int = Field(description="0-based index into plan")
    started_at: float
    step_started_at: float
    status: str
    reason: str


class RolloutOut(BaseModel):
    candidate: str
    strategy: str
    progress: ProgressOut
    token: int
    next_at: float | None
    model: dict[str, Any] | None = Field(None, description="in_place: the artifact swapped in")
    gate: GateOut | None = None
    plan: list[int] = Field(description="the candidate's percent at each step")
    gated: bool


class RolloutResponse(BaseModel):
    contract: str
    traffic: dict[str, int]
    rollout: RolloutOut | None


def rollout_out(snapshot: ContractSnapshot) -> RolloutOut | None:
    record: RolloutRecord | None = snapshot.contract.rollout
    if record is None:
        return None
    variant = snapshot.variants.get(record.candidate)
    plan = plan_of(variant.spec) if variant is not None else None
    data = record.to_dict()
    return RolloutOut(
        **{**data, "strategy": record.strategy},
        plan=list(schedule_of(plan)) if plan is not None else [100],
        gated=plan is not None and plan.gate is not None,
    )


def rollout_response(snapshot: ContractSnapshot) -> RolloutResponse:
    return RolloutResponse(
        contract=snapshot.contract.name,
        traffic=snapshot.contract.traffic,
        rollout=rollout_out(snapshot),
    )
