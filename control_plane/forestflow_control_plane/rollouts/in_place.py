"""In-place rollouts: new weights for a variant that keeps its version, its traffic and its
replicas. The job swaps the artifact into one running replica at a time through the
runtime's repository API (which loads and warms beside the old model, then flips), checks
that the replica answers the contract correctly, and only then goes on; the first failure
reverts every replica already swapped and leaves the stored variant as it was. The variant's
spec changes only once every replica serves the new weights, so a replica started later
loads them too; on knative that spec change is a new revision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from forestflow_control_plane import names
from forestflow_control_plane.knative.resources import make_service
from forestflow_control_plane.platforms.base import Platform, TrialError
from forestflow_control_plane.policies.desired import DesiredVariant, desired_state
from forestflow_control_plane.policies.lifecycle import SWAPPABLE, SWAPPABLE_STATES
from forestflow_control_plane.state.records import (
    ContractSnapshot,
    RolloutProgress,
    RolloutRecord,
    RolloutStatus,
)
from forestflow_control_plane.state.store import ConflictError, NotFoundError, Store

ReplicaFinder = Callable[[str, str], list[str]]
SWAP_TIMEOUT_S = 600.0
TRIAL_IMAGE = "trial"  # a trial replica runs the local runtime; the image is not used


class SwapFailedError(RuntimeError):
    """One replica would not load or answer with the new weights."""


class InPlace:
    def __init__(
        self,
        store: Store,
        platform: Platform,
        replicas: ReplicaFinder,
        client: httpx.Client,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._platform = platform
        self._replicas = replicas
        self._client = client
        self._clock = clock

    def run(self, contract: str, version: str, model: dict[str, Any]) -> dict[str, Any]:
        """Swap `model` into every replica of the variant; the rollout record says how it
        went. Running it again after it succeeded changes nothing."""
        snapshot = self._store.get(contract)
        variant = snapshot.variants.get(version)
        if variant is None:
            raise NotFoundError(f"variant {contract}@{version} not found")
        old = variant.spec["model"]
        if old == model:
            return _view(snapshot)
        self._begin(contract, version, model)
        name = names.model_name(contract)
        swapped: list[str] = []
        try:
            running = self._replicas(contract, version)
            if not running:
                self._try(snapshot, version, model, name)
            for url in running:
                swapped.append(url)
                self._swap(url, name, model, snapshot)
            snapshot = self._commit(contract, version, model)
            for url in self._replicas(contract, version):
                if url not in swapped:  # started with the old spec while we swapped
                    self._swap(url, name, model, snapshot)
        except SwapFailedError as exc:
            reason = str(exc)
            for url in reversed(swapped):
                try:
                    self._load(url, name, old)
                except SwapFailedError as failed:
                    reason += f"; reverting {url} failed too: {failed}"
            return _view(self._finish(contract, version, RolloutStatus.ROLLED_BACK, reason))
        return _view(self._finish(contract, version, RolloutStatus.SUCCEEDED, "weights swapped"))

    def _try(
        self, snapshot: ContractSnapshot, version: str, model: dict[str, Any], name: str
    ) -> None:
        """With no replica running, the new weights are tried on a short-lived one: a
        spec is never committed that the next cold start could not serve."""
        variant = snapshot.variants[version]
        service = make_service(
            snapshot.contract.name,
            snapshot.contract.spec,
            DesiredVariant(version, {**variant.spec, "model": model}),
            TRIAL_IMAGE,
        )
        try:
            with self._platform.trial_replica(service) as url:
                if url is not None:
                    self._probe(url, name, snapshot.contract.spec)
        except TrialError as exc:
            raise SwapFailedError(f"the new weights did not start: {exc}") from exc

    def _begin(self, contract: str, version: str, model: dict[str, Any]) -> None:
        now = self._clock()

        def change(before: ContractSnapshot | None) -> ContractSnapshot:
            if before is None:
                raise NotFoundError(f"contract {contract!r} not found")
            variant = before.variants[version]
            if variant.state not in SWAPPABLE_STATES:
                raise ConflictError(
                    f"variant.version: {version} is {variant.state}; in_place swaps only a "
                    "serving variant"
                )
            record = before.contract.rollout
            if record is not None and not record.finished:
                raise ConflictError(
                    f"the rollout of {record.candidate} is still running on {contract}; "
                    "let it finish or abort it first"
                )
            progress = RolloutProgress(
                version, dict(before.contract.traffic), 0, now, now, reason="swapping weights"
            )
            token = (record.token if record else 0) + 1
            rollout = RolloutRecord(progress, token, strategy="in_place", model=model)
            return replace(before, contract=replace(before.contract, rollout=rollout))

        self._store.update(
            contract, change, who="rollout", what=f"in-place swap of {version}: {model['uri']}"
        )

    def _commit(self, contract: str, version: str, model: dict[str, Any]) -> ContractSnapshot:
        """The variant's spec takes the new artifact and the next revision."""

        def change(before: ContractSnapshot | None) -> ContractSnapshot:
            if before is None:
                raise NotFoundError(f"contract {contract!r} not found")
            variant = before.variants[version]
            spec = {**variant.spec, "model": model, "revision": variant.spec.get("revision", 1) + 1}
            return before.with_variant(replace(variant, spec=spec))

        after = self._store.update(
            contract, change, who="rollout", what=f"in-place swap of {version}: new revision"
        )
        self._platform.apply(desired_state(after))
        return after

    def _finish(
        self, contract: str, version: str, status: RolloutStatus, reason: str
    ) -> ContractSnapshot:
        def change(before: ContractSnapshot | None) -> ContractSnapshot:
            if before is None:
                raise NotFoundError(f"contract {contract!r} not found")
            record = before.contract.rollout
            if record is None or record.candidate != version:
                return before
            progress = replace(record.progress, status=status, reason=reason)
            rollout = replace(record, progress=progress)
            return replace(before, contract=replace(before.contract, rollout=rollout))

        return self._store.update(
            contract, change, who="rollout", what=f"in-place swap of {version}: {status}: {reason}"
        )

    def _swap(self, url: str, name: str, model: dict[str, Any], snapshot: ContractSnapshot) -> None:
        self._load(url, name, model)
        self._probe(url, name, snapshot.contract.spec)

    def _load(self, url: str, name: str, model: dict[str, Any]) -> None:
        parameters = {key: model[key] for key in SWAPPABLE}
        try:
            response = self._client.post(
                f"{url}/v2/repository/models/{name}/load",
                json={"parameters": parameters},
                timeout=SWAP_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise SwapFailedError(f"{url}: load failed: {exc!r}") from exc
        if response.status_code != 200:
            raise SwapFailedError(f"{url}: load answered {response.status_code}: {response.text}")

    def _probe(self, url: str, name: str, contract_spec: dict[str, Any]) -> None:
        """One request shaped by the contract must come back with the contract's outputs."""
        inputs = [_zeros(spec) for spec in contract_spec["inputs"]]
        try:
            response = self._client.post(f"{url}/v2/models/{name}/infer", json={"inputs": inputs})
        except httpx.HTTPError as exc:
            raise SwapFailedError(f"{url}: probe failed: {exc!r}") from exc
        if response.status_code != 200:
            raise SwapFailedError(
                f"{url}: probe answered {response.status_code}: {response.text}"
            )
        got = {o["name"] for o in response.json().get("outputs", [])}
        wanted = {o["name"] for o in contract_spec["outputs"]}
        if not wanted <= got:
            raise SwapFailedError(
                f"{url}: probe answered outputs {sorted(got)}, not {sorted(wanted)}"
            )


def _zeros(spec: dict[str, Any]) -> dict[str, Any]:
    shape = [1 if d == -1 else d for d in spec["shape"]]
    size = 1
    for d in shape:
        size *= d
    value: Any = "" if spec["datatype"] == "BYTES" else (False if spec["datatype"] == "BOOL" else 0)
    return {"name": spec["name"], "datatype": spec["datatype"], "shape": shape,
            "data": [value] * size}


def _view(snapshot: ContractSnapshot) -> dict[str, Any]:
    rollout = snapshot.contract.rollout
    return {
        "contract": snapshot.contract.name,
        "traffic": snapshot.contract.traffic,
        "rollout": None if rollout is None else rollout.to_dict(),
    }
