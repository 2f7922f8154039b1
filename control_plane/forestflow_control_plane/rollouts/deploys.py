"""The store transitions behind deploys and deletes: registering a variant from a model
file, and retiring variants and contracts that nothing needs any more."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

from forestflow_control_plane.policies.desired import DesiredState, DesiredVariant
from forestflow_control_plane.policies.phase_in import FINISHED
from forestflow_control_plane.rollouts.in_place import check_in_place
from forestflow_control_plane.spec.model_file import ModelFile
from forestflow_control_plane.state.records import (
    ContractRecord,
    ContractSnapshot,
    VariantRecord,
    VariantState,
)
from forestflow_control_plane.state.store import ConflictError, NotFoundError, Store


def register(store: Store, model: ModelFile, who: str) -> ContractSnapshot:
    """Store the variant (and its contract on first deploy). Deploying the very same file
    again changes nothing, like `kubectl apply`; a different file under an existing version,
    or a contract schema that differs from the stored one, is a conflict."""
    contract = model.contract.name
    version = model.variant.version
    contract_spec, variant_spec = specs_of(model)

    def change(before: ContractSnapshot | None) -> ContractSnapshot:
        if before is None:
            before = ContractSnapshot(ContractRecord(name=contract, spec=contract_spec), {})
        elif before.contract.spec != contract_spec:
            raise ConflictError(
                f"contract: inputs/outputs differ from those stored for {contract}; "
                "a contract's schema is fixed once deployed"
            )
        if version in before.variants:
            raise ConflictError(
                f"variant.version: {version} already exists under {contract} with another "
                "spec; deploy a new version"
            )
        return before.with_variant(VariantRecord(contract, version, variant_spec))

    with contextlib.suppress(NotFoundError):
        current = store.get(contract)
        existing = current.variants.get(version)
        unchanged = existing is not None and existing.spec == variant_spec
        if unchanged and current.contract.spec == contract_spec:
            return current
        if existing is not None and model.rollout.strategy == "in_place":
            if current.contract.spec != contract_spec:
                raise ConflictError(
                    f"contract: inputs/outputs differ from those stored for {contract}"
                )
            check_in_place(existing.spec, variant_spec)
            return current  # the swap job changes the variant, once its replicas serve it
    return store.update(contract, change, who=who, what=f"deploy {version}")


def specs_of(model: ModelFile) -> tuple[dict[str, Any], dict[str, Any]]:
    """The contract's and the variant's specs as the store keeps them."""
    contract_spec = model.contract.model_dump(mode="json", exclude={"name"})
    variant_spec = {
        **model.variant.model_dump(mode="json", by_alias=True, exclude={"version"}),
        **model.model_dump(mode="json", include={"rollout", "slo", "expiry", "shadow", "routing"}),
    }
    return contract_spec, variant_spec


def first_state(model: ModelFile) -> DesiredState:
    """The desired state a first deploy of `model` ends in: the variant alone, with all the
    traffic (none for a shadow). What `ffctl deploy --dry-run` prints."""
    contract_spec, variant_spec = specs_of(model)
    variant = DesiredVariant(model.variant.version, variant_spec)
    traffic = {} if variant.shadow else {variant.version: 100}
    sticky = None if variant.shadow else model.routing.sticky_header
    return DesiredState(model.contract.name, contract_spec, traffic, (variant,), sticky)


def swap_of(snapshot: ContractSnapshot, model: ModelFile) -> dict[str, Any] | None:
    """The artifact an in-place deploy swaps into the running variant; None when the deploy
    is a new variant to roll out (or changes nothing)."""
    existing = snapshot.variants.get(model.variant.version)
    if model.rollout.strategy != "in_place" or existing is None:
        return None
    wanted: dict[str, Any] = model.variant.model.model_dump(mode="json", by_alias=True)
    return None if existing.spec["model"] == wanted else wanted


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
    if record is not None and record["progress"]["status"] not in FINISHED:
        candidate, status = record["candidate"], record["progress"]["status"]
        if candidate == version:
            raise ConflictError(
                f"{version} is being rolled out on {contract} ({status}): roll it back or "
                "abort it first"
            )
        if record["progress"]["previous"].get(version, 0) > 0:
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
