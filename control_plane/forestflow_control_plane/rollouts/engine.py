"""The rollout engine: load, step the phase-in policy, save, apply, schedule the next step
(`jobs` runs it in RQ).

The rollout's progress is stored on the contract record, so every step is one
compare-and-set transition and a worker killed between steps loses nothing: the scheduled
step waits in Redis for the next worker. Each scheduled step carries a token; a step whose
token is no longer the stored one (a stale or duplicated job) changes nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from forestflow_control_plane.platforms.base import Platform, PlatformError
from forestflow_control_plane.policies import lifecycle, phase_in
from forestflow_control_plane.policies.desired import desired_state, nothing
from forestflow_control_plane.policies.gates import GateResult
from forestflow_control_plane.policies.phase_in import Settled, StepResult
from forestflow_control_plane.policies.plans import plan_of
from forestflow_control_plane.rollouts.gate_metrics import MetricsSource, MetricsUnavailableError
from forestflow_control_plane.settings import SettingsError
from forestflow_control_plane.state.records import (
    ContractSnapshot,
    GateVerdict,
    RolloutRecord,
    RolloutStatus,
    VariantRecord,
    VariantState,
)
from forestflow_control_plane.state.store import ConflictError, NotFoundError, Store

# A step this late past its time, or a deploy this long unstarted, has lost its job (or
# waits behind a long one); the reconcile runs it. Running one the job then runs too is
# harmless: the step's token lets one of them move the rollout.
OVERDUE_GRACE_S = 3.0


class Action(StrEnum):
    PROMOTE = "promote"
    PAUSE = "pause"
    RESUME = "resume"
    ROLLBACK = "rollback"
    ABORT = "abort"


@dataclass(frozen=True)
class StepCall:
    """A rollout step to run at `at` (epoch seconds)."""

    contract: str
    version: str
    token: int
    at: float


Schedule = Callable[[StepCall], None]


MetricsFactory = Callable[[], MetricsSource]


Repair = Callable[[str], list[str]]


class Rollouts:
    """`metrics` is called the first time a gated step needs a reading, so a platform with no
    metrics source configured still runs every ungated rollout. `repair` is the in-place
    swaps' (in_place.InPlace.repair): the reconcile runs it first, for a swap whose job
    stopped. With `apply_later` (the API's) a change is not applied here: the contract goes
    to it, and a worker's job applies it (jobs.rq_realise)."""

    def __init__(
        self,
        store: Store,
        platform: Platform,
        schedule: Schedule,
        metrics: MetricsFactory | None = None,
        clock: Callable[[], float] = time.time,
        repair: Repair | None = None,
        apply_later: Callable[[str], None] | None = None,
    ) -> None:
        self._repair = repair
        self._apply_later = apply_later
        self._store = store
        self._platform = platform
        self._schedule = schedule
        self._metrics_factory = metrics
        self._metrics_source: MetricsSource | None = None
        self._clock = clock
        self._applying = threading.Lock()

    def start(self, contract: str, version: str) -> dict[str, Any]:
        """Begin `version`'s phase-in from the current split; an unfinished rollout of
        another version is aborted first (its split restored). Repeating it is harmless."""
        now = self._clock()
        settled = self._settled(contract, version)

        def change(before: ContractSnapshot) -> tuple[ContractSnapshot, StepResult | None]:
            variant = _variant(before, version)
            record = before.contract.rollout
            if variant.state is not VariantState.PENDING or (
                record is not None and record.candidate == version
            ):
                return before, None
            if variant.spec.get("shadow") is not None:
                return before.with_variant(replace(variant, state=VariantState.SHADOW)), None
            base = before
            if record is not None and not record.finished:
                plan = plan_of(before.variants[record.candidate].spec)
                aborted = phase_in.abort(plan, record.progress, f"superseded by {version}")
                base = lifecycle.with_result(before, aborted, record.token, now)
            previous = {v: p for v, p in base.contract.traffic.items() if p > 0}
            result = phase_in.start(plan_of(variant.spec), version, previous, now, settled)
            token = (record.token if record else 0) + 1
            return lifecycle.with_result(base, result, token, now), result

        return self._open_window(self._transition(contract, version, change), now)

    def advance(self, contract: str, version: str, token: int) -> dict[str, Any]:
        """Step the rollout if `token` is still current, judging a gated step's metrics."""
        now = self._clock()
        verdict = self._judge(self._store.get(contract), version, token, now)
        settled = self._settled(contract, version)

        def change(before: ContractSnapshot) -> tuple[ContractSnapshot, StepResult | None]:
            record = _current(before, version, token)
            if record is None:
                return before, None
            plan = plan_of(_variant(before, version).spec)
            result = phase_in.step(plan, record.progress, now, verdict, settled)
            after = lifecycle.with_result(before, result, token + 1, now)
            if verdict is not None and after.contract.rollout is not None:
                gate = GateVerdict(verdict.passed, verdict.reason, now)
                rollout = replace(after.contract.rollout, gate=gate)
                after = replace(after, contract=replace(after.contract, rollout=rollout))
            return after, result

        return self._open_window(self._transition(contract, version, change), now)

    def _open_window(self, outcome: dict[str, Any], now: float) -> dict[str, Any]:
        """Read the metrics of a gated step that opens now: a scraped source is cumulative,
        and this reading is the baseline its window is measured from."""
        if self._metrics_factory is None:
            return outcome
        snapshot = self._store.get(outcome["contract"])
        record = snapshot.contract.rollout
        if (
            record is None
            or record.status is not RolloutStatus.RUNNING
            or record.progress.step_started_at != now
            or plan_of(_variant(snapshot, record.candidate).spec).gate is None
        ):
            return outcome
        for version in (record.candidate, lifecycle.incumbent(record.progress)):
            if version is not None:
                with contextlib.suppress(MetricsUnavailableError, SettingsError):
                    self._metrics().window(outcome["contract"], version, now, now)
        return outcome

    def _metrics(self) -> MetricsSource:
        if self._metrics_source is None:
            assert self._metrics_factory is not None
            self._metrics_source = self._metrics_factory()
        return self._metrics_source

    def reconcile(self, contract: str) -> list[str]:
        """Re-evaluate the time-based policies of one contract and re-apply its desired state:
        repair an in-place swap whose job stopped, start a deploy whose job never ran (a
        crash between the deploy's write and its enqueue), run a rollout step whose scheduled
        job is overdue (lost with a flushed Redis, say), expire what the serving variant's
        ttl retires by now, and correct drift on the platform. Returns what it did, for the
        log; nothing when all was in order."""
        done = self._repair(contract) if self._repair else []
        snapshot = self._store.get(contract)
        for version in lifecycle.unstarted(snapshot, self._clock() - OVERDUE_GRACE_S):
            self.start(contract, version)
            done.append(f"started the rollout of {version}, whose job was lost")
            snapshot = self._store.get(contract)
        record = snapshot.contract.rollout
        if (
            record is not None
            and record.status is RolloutStatus.RUNNING
            and record.next_at is not None
            and self._clock() > record.next_at + OVERDUE_GRACE_S
        ):
            self.advance(contract, record.candidate, record.token)
            done.append(f"ran the overdue step of {record.candidate}")
            snapshot = self._store.get(contract)
        owner = lifecycle.policy_owner(snapshot)
        if owner is not None and lifecycle.expire(snapshot, owner, self._clock()) != snapshot:

            def retire(before: ContractSnapshot | None) -> ContractSnapshot:
                if before is None:
                    raise NotFoundError(f"contract {contract!r} not found")
                current = lifecycle.policy_owner(before)
                if current is None:
                    return before
                return lifecycle.expire(before, current, self._clock())

            snapshot = self._store.update(
                contract, retire, who="reconcile", what=f"expiry by {owner.version}"
            )
            done.append(f"expired by {owner.version}'s policy")
        if self._apply_latest(contract):
            done.append("re-applied the desired state")
        return done

    def realise(self, contract: str) -> bool:
        """Make the platform match what the store holds now: the contract's desired state,
        or nothing where it was deleted. Whether anything changed."""
        try:
            return self._apply_latest(contract)
        except NotFoundError:
            return self._platform.apply(nothing(contract))

    def _apply_latest(self, contract: str) -> bool:
        """Apply what the store holds now, one apply at a time in this process: a reconcile
        pass that read the store before a step committed must not apply after that step's
        apply and so undo it."""
        if self._apply_later is not None:
            self._apply_later(contract)
            return False
        with self._applying:
            return self._platform.apply(desired_state(self._store.get(contract)))

    def remove_orphans(self) -> list[str]:
        """Remove the objects of contracts the store no longer holds (a rollout job that
        raced a contract delete applies after the delete did), and return those contracts.
        The platform is read before the store, so a contract made meanwhile counts as held;
        one deleted and made again between the reads loses its objects until the next
        reconcile puts them back as drift."""
        on_platform = self._platform.contracts()
        orphans = sorted(on_platform - set(self._store.contracts()))
        for contract in orphans:
            self._platform.apply(nothing(contract))
        return orphans

    def _settled(self, contract: str, version: str) -> Settled | None:
        """What the platform serves and whether the candidate failed; None where the platform
        serves what it is given at once. A platform that cannot be read holds the step, as
        metrics that cannot be read hold a gate."""
        try:
            served = self._platform.served(contract)
            if served is None:
                return None
            status = self._platform.observe(contract).get(version)
        except PlatformError:
            return Settled(served={})
        return Settled(served, None if status is None else status.failure)

    def _judge(
        self, snapshot: ContractSnapshot, version: str, token: int, now: float
    ) -> GateResult | None:
        """The gate's verdict on the candidate over its current step; None when ungated.
        Metrics that cannot be read leave the gate undecided: the step holds, never passes."""
        record = _current(snapshot, version, token)
        if record is None:
            return None
        plan = plan_of(_variant(snapshot, version).spec)
        if plan.gate is None or record.status is not RolloutStatus.RUNNING:
            return None
        if self._metrics_factory is None:
            return GateResult(None, "undecided: no metrics source configured")
        since = record.progress.step_started_at
        incumbent = lifecycle.incumbent(record.progress)
        name = snapshot.contract.name
        try:
            metrics = self._metrics()
            candidate = metrics.window(name, version, since, now)
            baseline = None if incumbent is None else metrics.window(name, incumbent, since, now)
        except SettingsError as exc:
            return GateResult(None, f"undecided: no metrics source: {exc}")
        except MetricsUnavailableError as exc:
            return GateResult(None, f"undecided: metrics unavailable: {exc}")
        return plan.gate.evaluate(candidate, baseline)

    def act(self, contract: str, action: Action, who: str) -> dict[str, Any]:
        """promote, pause, resume, rollback or abort the contract's current rollout."""
        now = self._clock()
        snapshot = self._store.get(contract)
        record = snapshot.contract.rollout
        if record is None:
            raise ConflictError(f"contract {contract!r} has no rollout to {action}")
        version = record.candidate
        if record.strategy == "in_place":
            return self._stop_swap(contract, version, action, who)

        def change(before: ContractSnapshot) -> tuple[ContractSnapshot, StepResult | None]:
            current = before.contract.rollout
            if current is None or current.candidate != version:
                raise ConflictError(f"the rollout of {contract} changed; try again")
            plan = plan_of(_variant(before, version).spec)
            reason = f"{action} by {who}"
            try:
                if action is Action.RESUME:
                    result = phase_in.resume(plan, current.progress, now, reason)
                else:
                    result = getattr(phase_in, action.value)(plan, current.progress, reason)
            except phase_in.RolloutFinishedError as exc:
                raise ConflictError(f"rollout of {contract}@{version}: {exc}") from None
            return lifecycle.with_result(before, result, current.token + 1, now), result

        return self._transition(contract, version, change, who=who)

    def _stop_swap(self, contract: str, version: str, action: Action, who: str) -> dict[str, Any]:
        """Abort or roll back an in-place swap before its commit: only the record changes
        here; the swap's job, or the reconcile's repair where the job is gone, puts back
        the replicas it moved."""
        if action not in (Action.ABORT, Action.ROLLBACK):
            raise ConflictError(
                f"{action}: the in-place swap of {contract}@{version} can only be aborted or "
                "rolled back; it reverts on its own at the first replica that fails"
            )
        status = RolloutStatus.ABORTED if action is Action.ABORT else RolloutStatus.ROLLED_BACK

        def change(before: ContractSnapshot) -> tuple[ContractSnapshot, StepResult | None]:
            return lifecycle.stop_swap(before, version, status, action.value, who), None

        return self._transition(contract, version, change, who=who)

    def _transition(
        self,
        contract: str,
        version: str,
        change: Callable[[ContractSnapshot], tuple[ContractSnapshot, StepResult | None]],
        who: str = "rollout",
    ) -> dict[str, Any]:
        outcome: list[StepResult | None] = [None]
        prior: list[RolloutRecord | None] = [None]

        def apply_change(before: ContractSnapshot | None) -> ContractSnapshot:
            if before is None:
                raise NotFoundError(f"contract {contract!r} not found")
            after, outcome[0] = change(before)
            prior[0] = before.contract.rollout
            return after

        current = self._store.get(contract)
        if apply_change(current) == current:
            after = current
        else:
            after = self._store.update(
                contract, apply_change, who=who,
                what=lambda: _describe(version, outcome[0], prior[0]),
            )
            result = outcome[0]
            if result is not None and result.next_at is not None:
                record = after.contract.rollout
                assert record is not None
                self._schedule(StepCall(contract, version, record.token, result.next_at))
        self._apply_latest(contract)
        rollout = after.contract.rollout
        return {
            "contract": contract,
            "version": version,
            "traffic": after.contract.traffic,
            "rollout": None if rollout is None else rollout.to_dict(),
        }


def _current(snapshot: ContractSnapshot, version: str, token: int) -> RolloutRecord | None:
    """The rollout record if `version`'s step `token` is still the one that may move it."""
    record = snapshot.contract.rollout
    if record is None or record.candidate != version or record.token != token:
        return None
    return record


def _variant(snapshot: ContractSnapshot, version: str) -> VariantRecord:
    if version not in snapshot.variants:
        raise NotFoundError(f"variant {snapshot.contract.name}@{version} not found")
    return snapshot.variants[version]


def _describe(
    version: str, result: StepResult | None, before: RolloutRecord | None
) -> str | None:
    """What the audit log says of a step; None for a step that holds where it was (a hold
    not over, a gate undecided, a split not served yet): it rewrites the record, nothing
    changes state."""
    if result is None:
        return f"rollout {version}"
    progress = result.progress
    if (
        before is not None
        and before.candidate == version
        and (before.progress.step, before.status) == (progress.step, progress.status)
    ):
        return None
    split = ", ".join(f"{v} {p}%" for v, p in sorted(result.split.items()))
    if progress.status is RolloutStatus.RUNNING:
        return f"rollout {version}: step {progress.step + 1}: {split}"
    reason = f" ({progress.reason})" if progress.reason else ""
    return f"rollout {version}: {progress.status.value}{reason}: {split}"
