"""Where the shadow mirror reaches a shadow variant: its Service, never the contract's Route
(a shadow takes no routed traffic). Through the local gateway by Host header, or through
the cluster's DNS on Knative; tests point straight at runtime processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from forestflow_control_plane import names


@dataclass(frozen=True)
class Target:
    """A base URL, and the Host header to send when an ingress routes by it."""

    url: str
    host: str | None = None


class ShadowTargets(Protocol):
    def target(self, contract: str, version: str) -> Target:
        """Where the variant `version` of `contract` answers."""
        ...


@dataclass(frozen=True)
class GatewayTargets:
    """The local platform: the gateway routes `<service>.<namespace>.<domain>` to the
    Service's replicas, hydrating it from zero as for any request."""

    gateway_url: str
    domain: str

    def target(self, contract: str, version: str) -> Target:
        namespace, _ = names.split_contract(contract)
        service = names.service_name(contract, version)
        return Target(self.gateway_url, f"{service}.{namespace}.{self.domain}")


@dataclass(frozen=True)
class ClusterTargets:
    """Knative: every Service answers at its cluster-local name (activator included)."""

    def target(self, contract: str, version: str) -> Target:
        namespace, _ = names.split_contract(contract)
        service = names.service_name(contract, version)
        return Target(f"http://{service}.{namespace}.svc.cluster.local")
