"""Desired state: what the platform should realise for one contract, derived from the
store snapshot alone. It is the only input of a platform."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forestflow_control_plane.records import ContractSnapshot, VariantState

LIVE_STATES = frozenset(
    {VariantState.PENDING, VariantState.PHASING_IN, VariantState.SERVING, VariantState.SHADOW}
)


@dataclass(frozen=True)
class DesiredVariant:
    version: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class DesiredState:
    contract: str
    contract_spec: dict[str, Any]
    traffic: dict[str, int]
    variants: tuple[DesiredVariant, ...]


def desired_state(snapshot: ContractSnapshot) -> DesiredState:
    live = sorted(
        (v for v in snapshot.variants.values() if v.state in LIVE_STATES),
        key=lambda v: (v.created_at, v.version),
    )
    traffic = {v.version: snapshot.contract.traffic.get(v.version, 0) for v in live}
    return DesiredState(
        contract=snapshot.contract.name,
        contract_spec=snapshot.contract.spec,
        traffic=traffic,
        variants=tuple(DesiredVariant(v.version, v.spec) for v in live),
    )
