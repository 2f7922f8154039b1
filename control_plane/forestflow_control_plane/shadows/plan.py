"""The mirror's replay plans (`policies.replay`), read from the store and cached briefly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from forestflow_control_plane.policies.replay import ReplayPlan, replay_plan
from forestflow_control_plane.state.records import ContractSnapshot
from forestflow_control_plane.state.store import NotFoundError

MAX_CACHED = 1000


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
        self._cached: dict[str, tuple[float, ReplayPlan | None]] = {}

    async def get(self, contract: str) -> ReplayPlan | None:
        now = self._clock()
        cached = self._cached.get(contract)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        try:
            plan = replay_plan(await asyncio.to_thread(self._load, contract))
        except NotFoundError:
            plan = None
        if len(self._cached) >= MAX_CACHED:
            self._cached = {c: e for c, e in self._cached.items() if now - e[0] < self._ttl_s}
        self._cached[contract] = (now, plan)
        return plan
