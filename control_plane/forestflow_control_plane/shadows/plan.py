"""Which shadows the mirror replays one primary request to: a pure plan per contract, read
from the store and cached briefly.

The primary samples at its payload rate r (raised for its shadows, see
DesiredVariant.payload_rate), so a shadow that wants a fraction s of the contract's
requests gets each sampled one with probability s / r.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from forestflow_control_plane.knative.resources import model_name
from forestflow_control_plane.policies.desired import desired_state
from forestflow_control_plane.policies.shadow import Shadow, shadows
from forestflow_control_plane.state.records import ContractSnapshot
from forestflow_control_plane.state.store import NotFoundError

MAX_CACHED = 1000


@dataclass(frozen=True)
class Plan:
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


def plan_of(snapshot: ContractSnapshot) -> Plan | None:
    """The contract's plan, or None when no shadow wants anything mirrored."""
    wanted = tuple(s for s in shadows(snapshot.variants.values()) if s.sample_rate > 0)
    if not wanted:
        return None
    state = desired_state(snapshot)
    return Plan(
        contract=state.contract,
        model=model_name(state.contract),
        datatypes={t["name"]: t["datatype"] for t in state.contract_spec.get("inputs", [])},
        primary_rates={v.version: v.payload_rate for v in state.variants if not v.shadow},
        shadows=wanted,
    )


class Plans:
    """Plans by contract, each reloaded after `ttl_s`: a shadow deployed or retired is
    seen within that time. `load` is blocking (the Store); it runs in a thread."""

    def __init__(
        self,
        load: Callable[[str], ContractSnapshot],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: dict[str, tuple[float, Plan | None]] = {}

    async def get(self, contract: str) -> Plan | None:
        now = self._clock()
        cached = self._cached.get(contract)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        try:
            plan = plan_of(await asyncio.to_thread(self._load, contract))
        except NotFoundError:
            plan = None
        if len(self._cached) >= MAX_CACHED:
            self._cached = {c: e for c, e in self._cached.items() if now - e[0] < self._ttl_s}
        self._cached[contract] = (now, plan)
        return plan
