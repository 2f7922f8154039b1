"""The interface every platform offers to rollout jobs."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from forestflow_control_plane.policies.desired import DesiredState


class PlatformError(RuntimeError):
    """The platform refused a request or could not be reached (the Kubernetes API): the
    message names the request, the object, the HTTP status and the platform's own words."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TrialError(RuntimeError):
    """A trial replica exited or never became ready; the message carries its log's tail."""


@dataclass(frozen=True)
class VariantStatus:
    """`failure`: why its current revision will never be ready; None while it is or may be."""

    version: str
    ready: bool
    replicas: int
    failure: str | None = None


class Platform(Protocol):
    def apply(self, state: DesiredState) -> bool:
        """Realise `state`; True when anything changed. Applying twice changes nothing."""
        ...

    def observe(self, contract: str) -> dict[str, VariantStatus]:
        ...

    def served(self, contract: str) -> dict[str, int] | None:
        """The split the contract's ingress serves now, by version (shares above 0 only);
        None where what is applied is served at once (local)."""
        ...

    def contracts(self) -> set[str]:
        """Every contract that has objects on the platform, whether or not the store still
        holds it."""
        ...

    def replica_urls(self, contract: str, version: str) -> list[str]:
        """Running replicas the control plane can reach to swap weights in place; none
        where the platform swaps by starting a new revision instead (knative)."""
        ...

    def trial_replica(self, service: dict[str, Any]) -> AbstractContextManager[str | None]:
        """A short-lived replica of `service` (a Knative Service object) to try new weights
        on when none is running; None where the platform readies a new revision itself
        before it takes traffic (knative)."""
        ...
