"""Desired state: what the platform should realise for one contract, derived from the
store snapshot alone. It is the only input of a platform."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from forestflow_control_plane.policies.lifecycle import LIVE_STATES
from forestflow_control_plane.policies.shadow import mirror_rate
from forestflow_control_plane.state.records import ContractSnapshot


@dataclass(frozen=True)
class DesiredVariant:
    version: str
    spec: dict[str, Any]
    mirror_rate: float = 0.0

    @property
    def shadow(self) -> bool:
        """A shadow runs but no Route targets it: it only sees mirrored requests."""
        return self.spec.get("shadow") is not None

    @property
    def payload_rate(self) -> float:
        """The fraction of requests the runtime samples onto the payload stream: its own
        `payload_logging.sample_rate`, raised to `mirror_rate` so the shadow mirror has
        every request its shadows want."""
        own = (self.spec.get("payload_logging") or {}).get("sample_rate", 0.0)
        return float(max(own, self.mirror_rate))


@dataclass(frozen=True)
class DesiredState:
    """`traffic` covers the routable variants (every live one but the shadows), 0 % included,
    so each keeps its tag URL; `sticky_header` comes from the newest routable variant."""

    contract: str
    contract_spec: dict[str, Any]
    traffic: dict[str, int]
    variants: tuple[DesiredVariant, ...]
    sticky_header: str | None = None


def nothing(contract: str) -> DesiredState:
    """A desired state with no variants: the platform removes every object of `contract`."""
    return DesiredState(contract=contract, contract_spec={}, traffic={}, variants=())


def desired_state(snapshot: ContractSnapshot) -> DesiredState:
    live = sorted(
        (v for v in snapshot.variants.values() if v.state in LIVE_STATES),
        key=lambda v: (v.created_at, v.version),
    )
    rate = mirror_rate(live)
    variants = tuple(
        v if v.shadow else replace(v, mirror_rate=rate)
        for v in (DesiredVariant(r.version, r.spec) for r in live)
    )
    routable = [v for v in variants if not v.shadow]
    traffic = {v.version: snapshot.contract.traffic.get(v.version, 0) for v in routable}
    routing = (routable[-1].spec.get("routing") or {}) if routable else {}
    return DesiredState(
        contract=snapshot.contract.name,
        contract_spec=snapshot.contract.spec,
        traffic=traffic,
        variants=variants,
        sticky_header=routing.get("sticky_header"),
    )
