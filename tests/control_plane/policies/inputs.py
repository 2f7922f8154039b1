"""Inputs shared by the policy tests: variant records, and hypothesis strategies for
traffic splits and rollout plans."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from forestflow_control_plane.policies.gates import SLO, Gate
from forestflow_control_plane.policies.phase_in import Canary, Immediate, Linear, Plan
from forestflow_control_plane.state.records import VariantRecord, VariantState

VERSIONS = ("v1", "v2", "v3", "v4", "v5", "v6")


def variant(
    version: str, state: VariantState, created_at: float = 0.0, spec: dict[str, Any] | None = None
) -> VariantRecord:
    return VariantRecord("fraud/scoring", version, spec or {}, state, created_at=created_at)


@st.composite
def splits(draw: st.DrawFn, min_versions: int = 1) -> dict[str, int]:
    """A valid split: 1..6 versions, integer percents (0 allowed) summing to 100."""
    count = draw(st.integers(min_versions, len(VERSIONS)))
    versions = draw(st.permutations(VERSIONS))[:count]
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=count - 1, max_size=count - 1)))
    bounds = [0, *cuts, 100]
    return {v: bounds[i + 1] - bounds[i] for i, v in enumerate(versions)}


GATE = Gate(SLO(p95_latency_ms=100.0), recheck_seconds=15.0)
gates = st.one_of(st.none(), st.just(GATE))

canary_steps = st.lists(st.integers(1, 99), max_size=8, unique=True).map(
    lambda steps: (*sorted(steps), 100)
)
plans: st.SearchStrategy[Plan] = st.one_of(
    st.builds(Immediate, gate=gates),
    st.builds(Canary, steps=canary_steps, hold_seconds=st.floats(0, 3600), gate=gates),
    st.builds(
        lambda steps, interval, gate: Linear(steps * interval, interval, gate),
        st.integers(1, 150),
        st.floats(0.5, 600),
        gates,
    ),
)
