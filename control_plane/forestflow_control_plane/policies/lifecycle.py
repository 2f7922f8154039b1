"""A variant's life under a contract: which states are live, what a rollout's outcome does
to the snapshot, what an owner's expiry policy retires, and what may be deleted or changed
in place. Pure functions of the snapshot and the clock; a refusal is a `ConflictError`
naming what stands in the way."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from forestflow_control_plane.policies import expiry
from forestflow_control_plane.policies.phase_in import StepResult
from forestflow_control_plane.state.errors import ConflictError, NotFoundError
from forestflow_control_plane.state.records import (
    ContractSnapshot,
    RolloutProgress,
    RolloutRecord,
    RolloutStatus,
    VariantRecord,
    VariantState,
)

LIVE_STATES = frozenset(
    {VariantState.PENDING, VariantState.PHASING_IN, VariantState.SERVING, VariantState.SHADOW}
)
# What an in-place deploy may change: the artifact. Anything else needs a new version.
SWAPPABLE = ("uri", "format")
SWAPPABLE_STATES = frozenset({VariantState.SERVING, VariantState.PHASING_IN})
# The candidate's state while its rollout stands at each status; a paused or failed one
# carries the rollout's reason.
_CANDIDATE_STATE = {
    RolloutStatus.RUNNING: (VariantState.PHASING_IN, False),
    RolloutStatus.PAUSED: (VariantState.PHASING_IN, True),
    RolloutStatus.SUCCEEDED: (VariantState.SERVING, False),
    RolloutStatus.ROLLED_BACK: (VariantState.FAILED, True),
    RolloutStatus.ABORTED: (VariantState.FAILED, True),
}


def with_result(
    before: ContractSnapshot, result: StepResult, token: int, now: float
) -> ContractSnapshot:
    """The snapshot once `result` is applied: traffic, candidate state, rollout record,
    and, when the rollout succeeded, the candidate's expiry policy."""
    progress = result.progress
    candidate = before.variants[progress.candidate]
    state, with_reason = _CANDIDATE_STATE[progress.status]
    reason = progress.reason if with_reason else ""
    snapshot = before.with_variant(replace(candidate, state=state, reason=reason))
    traffic = {
        v: result.split.get(v, 0)
        for v, record in snapshot.variants.items()
        if record.state in LIVE_STATES
    }
    rollout = RolloutRecord(progress, token, result.next_at)
    contract = replace(snapshot.contract, traffic=traffic, rollout=rollout)
    snapshot = replace(snapshot, contract=contract)
    if progress.status is RolloutStatus.SUCCEEDED:
        snapshot = expire(snapshot, candidate, now)
    return snapshot


def expire(snapshot: ContractSnapshot, owner: VariantRecord, now: float) -> ContractSnapshot:
    """The snapshot with what `owner`'s expiry policy retires now marked expired."""
    spec = owner.spec.get("expiry") or {}
    policy = expiry.ExpiryPolicy(
        keep_latest=spec.get("keep_latest"),
        ttl_seconds=spec.get("ttl_seconds"),
        on_replacement=bool(spec.get("on_replacement")),
    )
    for version in expiry.for_snapshot(snapshot, policy, now):
        record = snapshot.variants[version]
        snapshot = snapshot.with_variant(
            replace(record, state=VariantState.EXPIRED, reason=f"expired by {owner.version}")
        )
    traffic = {v: p for v, p in snapshot.contract.traffic.items()
               if snapshot.variants[v].state in LIVE_STATES}
    return replace(snapshot, contract=replace(snapshot.contract, traffic=traffic))


def policy_owner(snapshot: ContractSnapshot) -> VariantRecord | None:
    """Whose expiry policy rules the contract: its newest serving variant."""
    serving = [v for v in snapshot.variants.values() if v.state is VariantState.SERVING]
    return max(serving, key=lambda v: (v.created_at, v.version), default=None)


def unstarted(snapshot: ContractSnapshot, registered_before: float) -> list[str]:
    """Variants deployed before `registered_before` that are still pending, and newer than
    the rollout's candidate (an older one was superseded by it): their start job was lost.
    Oldest first, as their jobs would have run."""
    record = snapshot.contract.rollout
    current = snapshot.variants.get(record.candidate) if record else None
    pending = [
        v for v in snapshot.variants.values()
        if v.state is VariantState.PENDING and v.updated_at < registered_before
        and (current is None or (v.created_at, v.version) > (current.created_at, current.version))
    ]
    return [v.version for v in sorted(pending, key=lambda v: (v.created_at, v.version))]


def stop_swap(
    snapshot: ContractSnapshot, version: str, status: RolloutStatus, action: str, who: str
) -> ContractSnapshot:
    """`who`'s `action` (abort, rollback) ends the in-place swap of `version` with `status`
    before its commit: only the record changes; the replicas it moved are put back by its
    job or the reconcile."""
    contract, record = snapshot.contract.name, snapshot.contract.rollout
    what, reason = f"{action}: the in-place swap of {contract}@{version}", f"{action} by {who}"
    if record is None or record.candidate != version:
        raise ConflictError(f"the rollout of {contract} changed; try again")
    if record.finished:
        raise ConflictError(f"{what} is already {record.status}")
    if snapshot.variants[version].spec["model"] == record.model:
        raise ConflictError(
            f"{what} has committed: the stored spec names the new weights; deploy the old "
            "ones in place to go back"
        )
    rollout = replace(record, progress=replace(record.progress, status=status, reason=reason))
    return replace(snapshot, contract=replace(snapshot.contract, rollout=rollout))


def incumbent(progress: RolloutProgress) -> str | None:
    """The version the candidate is measured against: the largest share before the rollout."""
    return max(
        (v for v, p in progress.previous.items() if p > 0 and v != progress.candidate),
        key=lambda v: (progress.previous[v], v),
        default=None,
    )


def retire(
    before: ContractSnapshot | None, contract: str, version: str, who: str
) -> ContractSnapshot:
    """The snapshot with `version` expired; a conflict while clients or a rollout need it."""
    if before is None:
        raise NotFoundError(f"contract {contract!r} not found")
    variant = before.variants.get(version)
    if variant is None:
        raise NotFoundError(f"variant {contract}@{version} not found")
    share = before.contract.traffic.get(version, 0)
    if share > 0:
        raise ConflictError(
            f"{version} serves {share} % of {contract}: roll it back or promote another "
            "version first"
        )
    record = before.contract.rollout
    if record is not None and not record.finished:
        candidate, status = record.candidate, record.status.value
        if candidate == version:
            raise ConflictError(
                f"{version} is being rolled out on {contract} ({status}): roll it back or "
                "abort it first"
            )
        if record.progress.previous.get(version, 0) > 0:
            raise ConflictError(
                f"{version} is what the {status} rollout of {candidate} on {contract} would "
                f"roll back to: promote {candidate} or let its rollout finish first"
            )
    retired = replace(variant, state=VariantState.EXPIRED, reason=f"deleted by {who}")
    traffic = {v: p for v, p in before.contract.traffic.items() if v != version}
    after = before.with_variant(retired)
    return replace(after, contract=replace(after.contract, traffic=traffic))


def refuse_while_serving(snapshot: ContractSnapshot) -> None:
    """A contract deleted while it serves would leave its clients with 404s: refuse."""
    serving = {v: p for v, p in sorted(snapshot.contract.traffic.items()) if p > 0}
    if serving:
        split = ", ".join(f"{v} {p} %" for v, p in serving.items())
        raise ConflictError(
            f"{snapshot.contract.name} still serves traffic ({split}): roll its versions "
            "back first, or delete with force=true"
        )


def check_in_place(current: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse an in-place deploy that changes more than the artifact, naming the field."""
    for key in sorted(current.keys() | wanted.keys()):
        if key in ("model", "rollout", "revision"):
            continue
        if current.get(key) != wanted.get(key):
            raise ConflictError(
                f"{_field(key)}: differs from the running variant; in_place changes only "
                "variant.model.uri and variant.model.format, deploy a new version for more"
            )
    old, new = current["model"], wanted["model"]
    for key in sorted(old.keys() | new.keys()):
        if key not in SWAPPABLE and old.get(key) != new.get(key):
            raise ConflictError(
                f"variant.model.{key}: cannot change in place; deploy a new version"
            )


def _field(key: str) -> str:
    return key if key in ("rollout", "slo", "expiry", "shadow", "routing") else f"variant.{key}"
