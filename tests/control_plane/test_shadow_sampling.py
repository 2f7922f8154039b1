"""Primaries sample for their shadows: each routable variant's runtime logs payloads at
the larger of its own rate and its contract's largest shadow rate, and the mirror replays
each sampled request to a shadow with the probability that makes up the shadow's rate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from forestflow_control_plane.knative.resources import make_objects
from forestflow_control_plane.policies.desired import desired_state
from forestflow_control_plane.policies.replay import ReplayPlan, replay_plan
from forestflow_control_plane.policies.shadow import Shadow
from forestflow_control_plane.state.records import (
    ContractRecord,
    ContractSnapshot,
    VariantRecord,
    VariantState,
)

S = VariantState
C = "fraud/scoring"
CONTRACT_SPEC = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 2]}],
}


def spec(logging: float = 0.0, shadow: float | None = None) -> dict[str, Any]:
    return {
        "model": {"uri": "/m.pt", "format": "torchscript"},
        "device": "cpu",
        "batching": {"max_batch_size": 8, "window_ms": 2, "max_queue": 64, "timeout_ms": 1000},
        "scaling": {"min_replicas": 0, "max_replicas": 1, "target_concurrency": 8,
                    "retention_seconds": 60},
        "resources": {},
        "payload_logging": {"sample_rate": logging, "max_length": 500},
        **({} if shadow is None else {"shadow": {"sample_rate": shadow}}),
    }


def snapshot(*variants: tuple[str, VariantState, dict[str, Any]]) -> ContractSnapshot:
    records = {
        version: VariantRecord(C, version, body, state, created_at=float(i))
        for i, (version, state, body) in enumerate(variants)
    }
    contract = ContractRecord(C, CONTRACT_SPEC, traffic={"v1": 100})
    return ContractSnapshot(contract, records)


def payload_env(snap: ContractSnapshot) -> dict[str, dict[str, str]]:
    """Per version, its runtime's FF_PAYLOAD_* variables."""
    found = {}
    for obj in make_objects(desired_state(snap), "image"):
        if obj["kind"] == "Service":
            env = obj["spec"]["template"]["spec"]["containers"][0]["env"]
            version = obj["metadata"]["labels"]["forestflow.dev/version"]
            found[version] = {e["name"]: e["value"] for e in env if "PAYLOAD" in e["name"]}
    return found


ON = {"FF_PAYLOAD_SAMPLE_RATE": "1.0", "FF_PAYLOAD_MAX_LENGTH": "500"}
TENTH = {"FF_PAYLOAD_SAMPLE_RATE": "0.1", "FF_PAYLOAD_MAX_LENGTH": "500"}
HALF = {"FF_PAYLOAD_SAMPLE_RATE": "0.5", "FF_PAYLOAD_MAX_LENGTH": "500"}
RATES: list[tuple[str, list[tuple[str, VariantState, dict[str, Any]]], dict[str, Any]]] = [
    ("no shadow: no sampling", [("v1", S.SERVING, spec())], {"v1": {}}),
    ("no shadow: its own logging", [("v1", S.SERVING, spec(0.1))], {"v1": TENTH}),
    ("a shadow raises every routable variant",
     [("v1", S.SERVING, spec()), ("v2", S.PHASING_IN, spec(0.1)), ("v3", S.SHADOW, spec(0, 0.5))],
     {"v1": HALF, "v2": HALF, "v3": {}}),
    ("the largest shadow rate wins",
     [("v1", S.SERVING, spec()), ("v2", S.SHADOW, spec(0, 0.1)), ("v3", S.SHADOW, spec(0, 1))],
     {"v1": ON, "v2": {}, "v3": {}}),
    ("its own rate when larger",
     [("v1", S.SERVING, spec(0.5)), ("v2", S.SHADOW, spec(0, 0.1))], {"v1": HALF, "v2": {}}),
    ("a shadow keeps its own logging",
     [("v1", S.SERVING, spec()), ("v2", S.SHADOW, spec(0.1, 0.5))], {"v1": HALF, "v2": TENTH}),
    ("a shadow at zero asks nothing",
     [("v1", S.SERVING, spec()), ("v2", S.SHADOW, spec(0, 0))], {"v1": {}, "v2": {}}),
    ("an expired shadow asks nothing",
     [("v1", S.SERVING, spec()), ("v2", S.EXPIRED, spec(0, 1))], {"v1": {}}),
]


@pytest.mark.parametrize(("name", "variants", "want"), RATES, ids=[r[0] for r in RATES])
def test_primaries_sample_for_their_shadows(
    name: str, variants: list[tuple[str, VariantState, dict[str, Any]]], want: dict[str, Any]
) -> None:
    assert payload_env(snapshot(*variants)) == want


def test_the_plan_lists_live_shadows_and_each_primary_rate() -> None:
    snap = snapshot(
        ("v1", S.SERVING, spec(0.5)),
        ("v2", S.SHADOW, spec(0, 0.1)),
        ("v3", S.SHADOW, spec(0, 0.0)),
        ("v4", S.SHADOW, spec(0, 0.25)),
    )
    assert replay_plan(snap) == ReplayPlan(
        contract=C,
        model="scoring",
        datatypes={"features": "FP32"},
        primary_rates={"v1": 0.5},
        shadows=(Shadow("v2", 0.1), Shadow("v4", 0.25)),
    )
    assert replay_plan(snapshot(("v1", S.SERVING, spec()), ("v2", S.SHADOW, spec(0, 0)))) is None


def draws(*values: float) -> Iterator[float]:
    return iter(values)


PLAN = ReplayPlan(C, "scoring", {}, {"v1": 0.5, "v2": 1.0},
            (Shadow("v3", 0.5), Shadow("v4", 0.1)))
REPLAYS: list[tuple[str, str, list[float], list[str]]] = [
    ("a primary at its shadow's rate replays everything to it", "v1", [0.99, 0.21], ["v3"]),
    ("below the ratio", "v1", [0.0, 0.0], ["v3", "v4"]),
    ("the other primary samples more, so replays less", "v2", [0.49, 0.1], ["v3"]),
    ("at the ratio is out", "v2", [0.5, 0.09], ["v4"]),
    ("a shadow's own events are never mirrored", "v3", [], []),
    ("an unknown variant", "v9", [], []),
]


@pytest.mark.parametrize(
    ("name", "primary", "values", "want"), REPLAYS, ids=[r[0] for r in REPLAYS]
)
def test_replay_probability_is_shadow_rate_over_primary_rate(
    name: str, primary: str, values: list[float], want: list[str]
) -> None:
    values_left = draws(*values)
    assert PLAN.replay_to(primary, lambda: next(values_left)) == want
