"""What must hold once a fault is repaired, each read from where it is true: the store (the
records, the audit log), the gateway (its Route, by its /metrics), every replica (its
repository index) and the clients' own answers. Each check returns what it found wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from forestflow_control_plane import names
from forestflow_control_plane.policies.lifecycle import SWAPPABLE
from forestflow_control_plane.state.records import ContractSnapshot, Event, VariantState

from .kinds import Rollout

CONTRACT = "examples/mlp"


def finished(snapshot: ContractSnapshot, rollout: Rollout) -> bool:
    """The rollout has ended (a shadow: it shadows), whichever way."""
    if rollout.kind == "shadow":
        variant = snapshot.variants.get(rollout.version)
        return variant is not None and variant.state is VariantState.SHADOW
    record = snapshot.contract.rollout
    if record is None or record.candidate != rollout.version or not record.finished:
        return False
    return rollout.uri is None or (record.model or {}).get("uri") == rollout.uri


def gateway_split(gateway: str) -> dict[str, int]:
    """The percents the gateway routes the contract by, versions with none left out."""
    text = httpx.get(f"{gateway}/metrics", timeout=5).text
    split = {}
    for family in text_string_to_metric_families(text):
        if family.name != "forestflow_gateway_traffic_percent":
            continue
        for sample in family.samples:
            if sample.labels["contract"] == CONTRACT and sample.value > 0:
                split[sample.labels["version"]] = int(sample.value)
    return split


def stored_split(snapshot: ContractSnapshot) -> dict[str, int]:
    return {v: p for v, p in snapshot.contract.traffic.items() if p > 0}


def replica_artifacts(home: Path, snapshot: ContractSnapshot) -> dict[str, list[dict[str, Any]]]:
    """Per replica (its port), its variant's version and the artifacts its index reports:
    the one it serves, then any it is loading."""
    versions = {names.service_name(CONTRACT, v): v for v in snapshot.variants}
    found: dict[str, list[dict[str, Any]]] = {}
    for pid_file in home.glob("pids/runtimes/*.pid"):
        service, port = pid_file.stem.split("_", 1)[1].rsplit("-", 1)
        try:
            index = httpx.post(f"http://127.0.0.1:{port}/v2/repository/index", timeout=5).json()
        except httpx.HTTPError:
            continue  # stopped since its PID file was listed, or not listening yet
        for entry in index:
            artifacts = [entry, *entry.get("loading", [])]
            found[f"{versions.get(service, service)}@{port}"] = [_swappable(a) for a in artifacts]
    return found


def wrong_artifacts(home: Path, snapshot: ContractSnapshot) -> list[str]:
    """Replicas serving, or loading, another artifact than their variant's stored spec."""
    wrong = []
    for replica, artifacts in replica_artifacts(home, snapshot).items():
        version = replica.split("@")[0]
        variant = snapshot.variants.get(version)
        if variant is None:
            continue  # an expired variant's replica, on its way out
        stored = _swappable(variant.spec["model"])
        if artifacts != [stored]:
            wrong.append(f"replica {replica} serves {artifacts}, its spec says {stored}")
    return wrong


def repeated_events(events: list[Event]) -> list[str]:
    """An audit log records each transition once: among the events of one rollout, no
    description comes twice."""
    seen: set[str] = set()
    repeated = []
    for event in events:
        if event.what in seen:
            repeated.append(f"event {event.what!r} recorded again at {event.when:.3f}")
        seen.add(event.what)
    return repeated


def _swappable(model: dict[str, Any]) -> dict[str, Any]:
    return {key: model.get(key) for key in SWAPPABLE}
