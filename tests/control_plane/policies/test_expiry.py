from __future__ import annotations

from typing import Any

import pytest

from forestflow_control_plane.policies.expiry import ExpiryPolicy, for_snapshot, to_expire
from forestflow_control_plane.state.records import (
    ContractRecord,
    ContractSnapshot,
    VariantRecord,
    VariantState,
)
from tests.control_plane.policies.inputs import variant

S = VariantState
NOW = 1000.0
# v1..v3 released one after another; v4 is being phased in.
BASE = [
    variant("v1", S.SERVING, 100.0),
    variant("v2", S.SERVING, 200.0),
    variant("v3", S.SERVING, 300.0),
    variant("v4", S.PHASING_IN, 400.0),
]
ON_V3 = {"v1": 0, "v2": 0, "v3": 100, "v4": 0}
IDLE_SHADOW = variant("v0", S.SHADOW, 50.0, {"shadow": {"sample_rate": 0.0}})
LIVE_SHADOW = variant("v5", S.SHADOW, 500.0)

ROWS: list[tuple[str, list[VariantRecord], dict[str, int], ExpiryPolicy, tuple[str, ...]]] = [
    ("no rules, nothing expires", BASE, ON_V3, ExpiryPolicy(), ()),
    ("keep latest 2", BASE, ON_V3, ExpiryPolicy(keep_latest=2), ("v1", "v2")),
    ("keep latest 10", BASE, ON_V3, ExpiryPolicy(keep_latest=10), ()),
    ("keep latest spares traffic", BASE, {"v2": 10, "v3": 90}, ExpiryPolicy(keep_latest=2),
     ("v1",)),
    ("keep latest 1 spares the serving and the phasing-in", BASE, ON_V3,
     ExpiryPolicy(keep_latest=1), ("v1", "v2")),
    ("shadows are not ranked", [*BASE, LIVE_SHADOW], ON_V3, ExpiryPolicy(keep_latest=3),
     ("v1",)),
    ("failed variants are ranked", [*BASE, variant("v5", S.FAILED, 500.0)], ON_V3,
     ExpiryPolicy(keep_latest=3), ("v1", "v2")),
    ("expired ones are neither ranked nor returned",
     [variant("v0", S.EXPIRED, 0.0), variant("v00", S.EXPIRED, 1.0), *BASE], ON_V3,
     ExpiryPolicy(keep_latest=3), ("v1",)),
    ("ttl", BASE, ON_V3, ExpiryPolicy(ttl_seconds=800.0), ("v1", "v2")),
    ("ttl of 0 spares only the protected", BASE, ON_V3, ExpiryPolicy(ttl_seconds=0.0),
     ("v1", "v2")),
    ("ttl not reached", BASE, ON_V3, ExpiryPolicy(ttl_seconds=901.0), ()),
    ("on replacement: older than the 100 % one", BASE, ON_V3,
     ExpiryPolicy(on_replacement=True), ("v1", "v2")),
    ("on replacement waits for 100 %", BASE, {"v2": 50, "v3": 50},
     ExpiryPolicy(on_replacement=True), ()),
    ("on replacement: the oldest serving all keeps the rest", BASE, {"v1": 100},
     ExpiryPolicy(on_replacement=True), ()),
    ("an idle shadow may expire", [IDLE_SHADOW, *BASE], ON_V3,
     ExpiryPolicy(on_replacement=True), ("v0", "v1", "v2")),
    ("a wanted shadow never expires", [LIVE_SHADOW, *BASE], ON_V3,
     ExpiryPolicy(ttl_seconds=0.0, keep_latest=1, on_replacement=True), ("v1", "v2")),
    ("a pending variant never expires", [variant("v9", S.PENDING, 0.0)], {},
     ExpiryPolicy(ttl_seconds=0.0), ()),
    ("rules combine", BASE, ON_V3, ExpiryPolicy(keep_latest=3, ttl_seconds=750.0),
     ("v1", "v2")),
]


@pytest.mark.parametrize(
    ("name", "variants", "split", "policy", "want"), ROWS, ids=[r[0] for r in ROWS]
)
def test_to_expire(
    name: str,
    variants: list[VariantRecord],
    split: dict[str, int],
    policy: ExpiryPolicy,
    want: tuple[str, ...],
) -> None:
    assert to_expire(variants, split, policy, NOW) == want
    assert to_expire(reversed(variants), split, policy, NOW) == want


def test_for_snapshot_reads_the_contract_traffic() -> None:
    snapshot = ContractSnapshot(
        ContractRecord("fraud/scoring", {}, traffic=ON_V3), {v.version: v for v in BASE}
    )
    assert for_snapshot(snapshot, ExpiryPolicy(keep_latest=2), NOW) == ("v1", "v2")


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("keep none", {"keep_latest": 0}, "keep_latest: must be >= 1, got 0"),
    ("negative ttl", {"ttl_seconds": -1.0}, "ttl_seconds: must be >= 0"),
]


@pytest.mark.parametrize(("name", "fields", "want"), BAD, ids=[b[0] for b in BAD])
def test_policy_refuses(name: str, fields: dict[str, Any], want: str) -> None:
    with pytest.raises(ValueError, match=want):
        ExpiryPolicy(**fields)
