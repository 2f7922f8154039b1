"""What the store keeps: contracts and variants as versioned records.

`generation` counts writes to a record; every write is a compare-and-set on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class VariantState(StrEnum):
    PENDING = "pending"
    SHADOW = "shadow"
    PHASING_IN = "phasing-in"
    SERVING = "serving"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    FAILED = "failed"


@dataclass(frozen=True)
class ContractRecord:
    name: str
    spec: dict[str, Any]
    traffic: dict[str, int] = field(default_factory=dict)
    rollout: dict[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    generation: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "traffic": self.traffic,
            "rollout": self.rollout,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "generation": self.generation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContractRecord:
        return cls(**data)


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
