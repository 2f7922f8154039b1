"""In-place rollouts: new weights for a variant that keeps its version, its traffic and its
replicas. The job swaps the artifact into one running replica at a time through the
runtime's repository API (which loads and warms beside the old model, then flips), checks
that the replica answers the contract correctly, and only then goes on; the first failure
reverts every replica already swapped and leaves the stored variant as it was. The variant's
spec changes only once every replica serves the new weights, so a replica started later
loads them too; on knative that spec change is a new revision.

Only the holder of the contract's swap lease moves replicas: the job while it runs, renewing
it. A job that dies (SIGKILL, a timeout) lets it lapse within seconds, and the next reconcile
pass takes it (`repair`): it finishes the swap from what the store says (committed: done; not:
rolled back) and loads the stored artifact into every replica that serves another, by what
each replica reports. An abort or rollback stops a running job at its next replica, and the
job puts back those it swapped.
"""

from __future__ import annotations

import threading
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
from forestflow_control_plane.state.leases import LeaseHeldError, held
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
# A dead job's swap is taken over this long after its last renewal: within a reconcile pass.
LEASE_S = 5.0


class SwapFailedError(RuntimeError):
    """One replica would not load or answer with the new weights."""


class SwapStoppedError(RuntimeError):
    """The swap was aborted or rolled back, or its lease lapsed: move no more replicas."""


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

    def run(
        self, contract: str, version: str, model: dict[str, Any], job: str | None = None
    ) -> dict[str, Any]:
        """Swap `model` into every replica of the variant; the rollout record says how it
        went. Running it again after it succeeded, or as the same `job` once that began its
        swap (a job queued again after its worker died), changes nothing."""
        snapshot = self._store.get(contract)
        variant = snapshot.variants.get(version)
        if variant is None:
            raise NotFoundError(f"variant {contract}@{version} not found")
        old, record = variant.spec["model"], snapshot.contract.rollout
        if old == model or (job is not None and record is not None and record.job == job):
            return _view(snapshot)
        try:
            with held(self._store.swap_lease(contract, LEASE_S)) as lost:
                return self._run(contract, version, old, model, lost, job)
        except LeaseHeldError:
            raise ConflictError(
                f"an in-place swap of {contract} is running; let it finish or abort it first"
            ) from None

    def _run(
        self,
        contract: str,
        version: str,
        old: dict[str, Any],
        model: dict[str, Any],
        lost: threading.Event,
        job: str | None,
    ) -> dict[str, Any]:
        snapshot = self._begin(contract, version, model, job)
        record = snapshot.contract.rollout
        assert record is not None
        token, name = record.token, names.model_name(contract)
        swapped: list[str] = []
        committed = False
        try:
            running = self._replicas(contract, version)
            if not running:
                self._try(snapshot, version, model, name)
            for url in running:
                self._going(contract, token, lost)
                swapped.append(url)
                self._swap(url, name, model, snapshot)
            self._going(contract, token, lost)
            snapshot, committed = self._commit(contract, version, model, token), True
            for url in self._replicas(contract, version):
                if url not in swapped:  # started with the old spec while we swapped
                    self._swap(url, name, model, snapshot)
        except SwapStoppedError:
            if not lost.is_set():  # stopped by an abort: put back what this job moved
                self._revert(swapped, name, old)
            return _view(self._store.get(contract))
        except SwapFailedError as exc:
            if committed:  # the spec names the new weights: the reconcile retries the rest
                status = RolloutStatus.SUCCEEDED
                reason = f"weights swapped; {exc}; the reconcile loads them there again"
            else:
                status, reason = RolloutStatus.ROLLED_BACK, str(exc) + self._revert(
                    swapped, name, old
                )
            return _view(self._finish(contract, version, token, status, reason))
        return _view(
            self._finish(contract, version, token, RolloutStatus.SUCCEEDED, "weights swapped")
        )

    def repair(self, contract: str) -> list[str]:
        """For the reconcile: finish an in-place swap whose job stopped, and load the
        stored artifact into every replica of the variant that serves or is loading
        another. Nothing while a job holds the lease. Returns what it did."""
        record = self._store.get(contract).contract.rollout
        if record is None or record.strategy != "in_place":
            return []
        try:
            with held(self._store.swap_lease(contract, LEASE_S)):
                return self._repair(contract)
        except LeaseHeldError:
            return []

    def _repair(self, contract: str) -> list[str]:
        snapshot = self._store.get(contract)
        record = snapshot.contract.rollout
        assert record is not None
        variant = snapshot.variants.get(record.candidate)
        if variant is None:
            return []
        done = []
        if not record.finished:
            status, reason = (
                (RolloutStatus.SUCCEEDED, "weights swapped; its job stopped after the commit")
                if variant.spec["model"] == record.model
                else (RolloutStatus.ROLLED_BACK, "its job stopped before every replica had "
                      "the new weights; reverted")
            )
            self._finish(contract, record.candidate, record.token, status, reason)
            done.append(f"in-place swap of {record.candidate}: {status}: {reason}")
        name, model = names.model_name(contract), variant.spec["model"]
        for url in self._replicas(contract, record.candidate):
            try:
                if self._last_loaded(url, name) != _swappable(model):
                    self._load(url, name, model)
                    done.append(f"{url} loaded {model['uri']}, as the spec says")
            except SwapFailedError as exc:
                done.append(f"{url} still serves another artifact: {exc}")
        return done

    def _going(self, contract: str, token: int, lost: threading.Event) -> None:
        if lost.is_set():
            raise SwapStoppedError("the swap lease lapsed")
        record = self._store.get(contract).contract.rollout
        if record is None or record.token != token or record.finished:
            raise SwapStoppedError("the swap was stopped")

    def _revert(self, swapped: list[str], name: str, old: dict[str, Any]) -> str:
        """Load `old` back into the replicas swapped, last first; what failed, said."""
        failures = ""
        for url in reversed(swapped):
            try:
                self._load(url, name, old)
            except SwapFailedError as failed:
                failures += f"; reverting {url} failed too: {failed}"
        return failures

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

    def _begin(
        self, contract: str, version: str, model: dict[str, Any], job: str | None
    ) -> ContractSnapshot:
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
            rollout = RolloutRecord(progress, token, strategy="in_place", model=model, job=job)
            return replace(before, contract=replace(before.contract, rollout=rollout))

        return self._store.update(
            contract, change, who="rollout", what=f"in-place swap of {version}: {model['uri']}"
        )

    def _commit(
        self, contract: str, version: str, model: dict[str, Any], token: int
    ) -> ContractSnapshot:
        """The variant's spec takes the new artifact and the next revision, unless the swap
        was stopped meanwhile."""

        def change(before: ContractSnapshot | None) -> ContractSnapshot:
            if before is None:
                raise NotFoundError(f"contract {contract!r} not found")
            record = before.contract.rollout
            if record is None or record.token != token or record.finished:
                raise SwapStoppedError("the swap was stopped")
            variant = before.variants[version]
            spec = {**variant.spec, "model": model, "revision": variant.spec.get("revision", 1) + 1}
            return before.with_variant(replace(variant, spec=spec))

        after = self._store.update(
            contract, change, who="rollout", what=f"in-place swap of {version}: new revision"
        )
        self._platform.apply(desired_state(after))
        return after

    def _finish(
        self, contract: str, version: str, token: int, status: RolloutStatus, reason: str
    ) -> ContractSnapshot:
        """The swap `token` ends so, unless it ended otherwise meanwhile (an abort)."""

        def change(before: ContractSnapshot | None) -> ContractSnapshot:
            if before is None:
                raise NotFoundError(f"contract {contract!r} not found")
            record = before.contract.rollout
            if record is None or record.token != token or record.finished:
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

    def _last_loaded(self, url: str, name: str) -> dict[str, Any]:
        """The artifact `url` serves once the loads it has begun are done, by its
        repository index."""
        try:
            response = self._client.post(f"{url}/v2/repository/index", timeout=10)
            response.raise_for_status()
            (entry,) = [e for e in response.json() if e.get("name") == name]
        except (httpx.HTTPError, ValueError) as exc:
            raise SwapFailedError(f"{url}: no repository index: {exc!r}") from exc
        return _swappable([entry, *entry.get("loading", [])][-1])

    def _load(self, url: str, name: str, model: dict[str, Any]) -> None:
        parameters = _swappable(model)
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


def _swappable(model: dict[str, Any]) -> dict[str, Any]:
    return {key: model.get(key) for key in SWAPPABLE}


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
