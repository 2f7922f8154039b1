"""Which shadows one primary request is replayed to: a pure plan per contract.

The primary samples at its payload rate r (raised for its shadows, see
DesiredVariant.payload_rate), so a shadow that wants a fraction s of the contract's
requests gets each sampled one with probability s / r.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from forestflow_control_plane import names
from forestflow_control_plane.policies.desired import desired_state
from forestflow_control_plane.policies.shadow import Shadow, shadows
from forestflow_control_plane.state.records import ContractSnapshot


@dataclass(frozen=True)
class ReplayPlan:
    contract: str
    model: str
    datatypes: dict[str, str]
    primary_rates: dict[str, float]
    shadows: tuple[Shadow, ...]

    def replay_to(self, primary: str, draw: Callable[[], float]) -> list[str]:
        """The shadows this request of `primary` goes to; none when `primary` is not a
        routable variant (a shadow's own events are never mirrored)."""
        rate = self.primary_rates.get(primary)
        if rate is None:
            return []
        return [s.version for s in self.shadows if draw() < s.sample_rate / rate]


def replay_plan(snapshot: ContractSnapshot) -> ReplayPlan | None:
    """The contract's plan, or None when no shadow wants anything mirrored."""
    wanted = tuple(s for s in shadows(snapshot.variants.values()) if s.sample_rate > 0)
    if not wanted:
        return None
    state = desired_state(snapshot)
    return ReplayPlan(
        contract=state.contract,
        model=names.model_name(state.contract),
        datatypes={t["name"]: t["datatype"] for t in state.contract_spec.get("inputs", [])},
        primary_rates={v.version: v.payload_rate for v in state.variants if not v.shadow},
        shadows=wanted,
    )
