"""The interface every platform offers to rollout jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from forestflow_control_plane.desired import DesiredState


@dataclass(frozen=True)
class VariantStatus:
    version: str
    ready: bool
    replicas: int


class Platform(Protocol):
    def apply(self, state: DesiredState) -> bool:
        """Realise `state`; True when anything changed. Applying twice changes nothing."""
        ...

    def observe(self, contract: str) -> dict[str, VariantStatus]:
        ...

    def replica_urls(self, contract: str, version: str) -> list[str]:
        """Running replicas the control plane can reach to swap weights in place; none
        where the platform swaps by starting a new revision instead (knative)."""
        ...
