"""What the store keeps: contracts and variants as versioned records, and the rollout
record on a contract. Parsed once here, at the store's boundary; everything above reads
typed fields.

`generation` counts writes to a record; every write is a compare-and-set on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal


class VariantState(StrEnum):
    PENDING = "pending"
    SHADOW = "shadow"
    PHASING_IN = "phasing-in"
    SERVING = "serving"
    EXPIRED = "expired"
    FAILED = "failed"


class RolloutStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


FINISHED = frozenset({RolloutStatus.SUCCEEDED, RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED})

Strategy = Literal["revision", "in_place"]


@dataclass(frozen=True)
class RolloutProgress:
    """Where a rollout stands: `step` indexes the plan's schedule; `previous` is the split
    before the rollout began, what a rollback restores exactly ({} on a first deploy: a
    rolled-back first deploy serves nothing)."""

    candidate: str
    previous: dict[str, int]
    step: int
    started_at: float
    step_started_at: float
    status: RolloutStatus = RolloutStatus.RUNNING
    reason: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "previous": self.previous,
            "step": self.step,
            "started_at": self.started_at,
            "step_started_at": self.step_started_at,
            "status": self.status.value,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutProgress:
        return cls(**{**data, "status": RolloutStatus(data["status"])})


@dataclass(frozen=True)
class GateVerdict:
    """The gate's last judgement of the candidate's step: None passed is undecided."""

    passed: bool | None
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "at": self.at}


@dataclass(frozen=True)
class RolloutRecord:
    """The contract's current (or last) rollout. `token` names the one scheduled step that
    may still move it; `next_at` is when that step runs (None: nothing is scheduled). An
    in-place swap carries the artifact it swaps in as `model`, and the job that began it
    as `job` (a job run again does not begin it twice)."""

    progress: RolloutProgress
    token: int
    next_at: float | None = None
    strategy: Strategy = "revision"
    model: dict[str, Any] | None = None
    gate: GateVerdict | None = None
    job: str | None = None

    @property
    def candidate(self) -> str:
        return self.progress.candidate

    @property
    def status(self) -> RolloutStatus:
        return self.progress.status

    @property
    def finished(self) -> bool:
        return self.progress.finished

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "candidate": self.candidate,
            "progress": self.progress.to_dict(),
            "token": self.token,
            "next_at": self.next_at,
        }
        if self.strategy != "revision":
            data["strategy"] = self.strategy
        if self.model is not None:
            data["model"] = self.model
        if self.gate is not None:
            data["gate"] = self.gate.to_dict()
        if self.job is not None:
            data["job"] = self.job
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutRecord:
        gate = data.get("gate")
        return cls(
            progress=RolloutProgress.from_dict(data["progress"]),
            token=int(data["token"]),
            next_at=data.get("next_at"),
            strategy=data.get("strategy", "revision"),
            model=data.get("model"),
            gate=None if gate is None else GateVerdict(gate["passed"], gate["reason"], gate["at"]),
            job=data.get("job"),
        )


@dataclass(frozen=True)
class ContractRecord:
    name: str
    spec: dict[str, Any]
    traffic: dict[str, int] = field(default_factory=dict)
    rollout: RolloutRecord | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "traffic": self.traffic,
            "rollout": None if self.rollout is None else self.rollout.to_dict(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "generation": self.generation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContractRecord:
        rollout = data.get("rollout")
        parsed = None if rollout is None else RolloutRecord.from_dict(rollout)
        return cls(**{**data, "rollout": parsed})


@dataclass(frozen=True)
class VariantRecord:
    contract: str
    version: str
    spec: dict[str, Any]
    state: VariantState = VariantState.PENDING
    reason: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "contract": self.contract,
            "version": self.version,
            "spec": self.spec,
            "state": self.state.value,
            "reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "generation": self.generation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantRecord:
        return cls(**{**data, "state": VariantState(data["state"])})


@dataclass(frozen=True)
class ContractSnapshot:
    """A contract with all its variants, read in one round trip."""

    contract: ContractRecord
    variants: dict[str, VariantRecord]

    def with_variant(self, variant: VariantRecord) -> ContractSnapshot:
        return replace(self, variants={**self.variants, variant.version: variant})

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.contract.to_dict(),
            "variants": [v.to_dict() for v in sorted(self.variants.values(), key=_created)],
        }


@dataclass(frozen=True)
class Event:
    id: str
    who: str
    what: str
    when: float
    before: dict[str, Any]
    after: dict[str, Any]


def _created(variant: VariantRecord) -> tuple[float, str]:
    return (variant.created_at, variant.version)
