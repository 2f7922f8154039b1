"""The shadow set: variants that receive mirrored requests but never answer a client.

Knative cannot mirror traffic, so the serving runtime samples requests onto a Redis
Stream and a mirror consumer replays them; this module says which variants it replays to
and at what sample rate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from forestflow_control_plane.state.records import VariantRecord, VariantState


@dataclass(frozen=True)
class Shadow:
    """A shadow variant and the fraction (0..1) of the contract's requests mirrored to it."""

    version: str
    sample_rate: float


def sample_rate(variant: VariantRecord) -> float:
    """`spec.shadow.sample_rate`, 1.0 when absent; a value outside 0..1 is an error."""
    rate = (variant.spec.get("shadow") or {}).get("sample_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ValueError(
            f"{variant.contract}@{variant.version}: shadow.sample_rate must be a number"
            f" in 0..1, got {rate!r}"
        )
    return float(rate)


def shadows(variants: Iterable[VariantRecord]) -> tuple[Shadow, ...]:
    """Every variant in state SHADOW, oldest first, with its sample rate (0 included)."""
    ordered = sorted(variants, key=lambda v: (v.created_at, v.version))
    return tuple(
        Shadow(v.version, sample_rate(v)) for v in ordered if v.state == VariantState.SHADOW
    )


def wanted(variant: VariantRecord) -> bool:
    """A shadow is wanted while something is mirrored to it (sample rate above 0)."""
    return variant.state == VariantState.SHADOW and sample_rate(variant) > 0


def mirror_rate(variants: Iterable[VariantRecord]) -> float:
    """The share of a contract's requests its primaries must sample for the mirror: the
    highest rate any of its shadows wants."""
    return max((s.sample_rate for s in shadows(variants)), default=0.0)
