"""The store transitions behind a deploy: registering a variant from a model file, and the
desired state or swap it asks for. What a delete may retire is a policy
(`policies.lifecycle`)."""

from __future__ import annotations

import contextlib
from typing import Any

from forestflow_control_plane.policies.desired import DesiredState, DesiredVariant
from forestflow_control_plane.policies.lifecycle import check_in_place
from forestflow_control_plane.spec.model_file import ModelFile
from forestflow_control_plane.state.records import (
    ContractRecord,
    ContractSnapshot,
    VariantRecord,
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
