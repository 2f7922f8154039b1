"""An in-memory platform for tests of jobs and policies: it keeps the objects it is given."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from forestflow_control_plane.knative.resources import contract_of, make_objects
from forestflow_control_plane.platforms.base import VariantStatus
from forestflow_control_plane.policies.desired import DesiredState


class MemoryPlatform:
    def __init__(self, image: str = "runtime:test") -> None:
        self.image = image
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.applies = 0
        self.replicas: dict[tuple[str, str], list[str]] = {}
        self.trials: list[dict[str, Any]] = []

    def apply(self, state: DesiredState) -> bool:
        """Keep exactly the desired objects of this contract, as the real platforms do."""
        self.applies += 1
        wanted = {
            (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o
            for o in make_objects(state, self.image)
        }
        current = {
            key: obj
            for key, obj in self.objects.items()
            if contract_of(obj) == state.contract
        }
        for key in current.keys() - wanted.keys():
            del self.objects[key]
        self.objects.update(wanted)
        return current != wanted

    def observe(self, contract: str) -> dict[str, VariantStatus]:
        return {}

    def contracts(self) -> set[str]:
        return {c for c in map(contract_of, self.objects.values()) if c is not None}

    def served(self, contract: str) -> None:
        return None

    def replica_urls(self, contract: str, version: str) -> list[str]:
        return list(self.replicas.get((contract, version), []))

    @contextlib.contextmanager
    def trial_replica(self, service: dict[str, Any]) -> Iterator[str | None]:
        self.trials.append(service)
        yield None
