"""Which old variants to retire, so a contract does not keep every version ever deployed.

Rules (a variant expires when any enabled rule selects it and nothing protects it):
- `keep_latest: N` selects every variant beyond the N newest (by created_at, then
  version). Pending, phasing-in and failed variants count among the N; shadows are
  experiments, not releases, and are neither ranked nor counted.
- `ttl_seconds` selects every variant created at least that long ago.
- `on_replacement` selects every variant older than one that now serves 100 %.
Protected, whatever the rules say:
- a variant with traffic > 0 in the split (it is answering clients);
- a variant pending or phasing in (a rollout owns it);
- a shadow that is still wanted (sample rate above 0);
- a variant already expired (nothing left to do; it is not returned).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from forestflow_control_plane.policies import shadow
from forestflow_control_plane.state.records import ContractSnapshot, VariantRecord, VariantState

UNTOUCHABLE = frozenset(
    {VariantState.PENDING, VariantState.PHASING_IN, VariantState.EXPIRED}
)
# Not releases for keep_latest: shadows are experiments, expired ones are already gone.
UNRANKED = frozenset({VariantState.SHADOW, VariantState.EXPIRED})


@dataclass(frozen=True)
class ExpiryPolicy:
    """All rules off by default: nothing expires unless the contract asks for it."""

    keep_latest: int | None = None
    ttl_seconds: float | None = None
    on_replacement: bool = False

    def __post_init__(self) -> None:
        if self.keep_latest is not None and self.keep_latest < 1:
            raise ValueError(f"keep_latest: must be >= 1, got {self.keep_latest}")
        if self.ttl_seconds is not None and self.ttl_seconds < 0:
            raise ValueError(f"ttl_seconds: must be >= 0, got {self.ttl_seconds}")


def to_expire(
    variants: Iterable[VariantRecord],
    split: Mapping[str, int],
    policy: ExpiryPolicy,
    now: float,
) -> tuple[str, ...]:
    """The versions to expire now, oldest first."""
    ordered = sorted(variants, key=lambda v: (v.created_at, v.version))
    selected: set[str] = set()
    if policy.keep_latest is not None:
        releases = [v for v in ordered if v.state not in UNRANKED]
        selected |= {v.version for v in releases[: max(len(releases) - policy.keep_latest, 0)]}
    if policy.ttl_seconds is not None:
        selected |= {v.version for v in ordered if now - v.created_at >= policy.ttl_seconds}
    if policy.on_replacement:
        successor = next((i for i, v in enumerate(ordered) if split.get(v.version) == 100), 0)
        selected |= {v.version for v in ordered[:successor]}
    return tuple(
        v.version for v in ordered if v.version in selected and not _protected(v, split)
    )


def for_snapshot(snapshot: ContractSnapshot, policy: ExpiryPolicy, now: float) -> tuple[str, ...]:
    """`to_expire` over a stored contract and its current traffic."""
    return to_expire(snapshot.variants.values(), snapshot.contract.traffic, policy, now)


def _protected(variant: VariantRecord, split: Mapping[str, int]) -> bool:
    return (
        split.get(variant.version, 0) > 0
        or variant.state in UNTOUCHABLE
        or shadow.wanted(variant)
    )
