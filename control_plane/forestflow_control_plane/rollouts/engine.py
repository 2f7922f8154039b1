"""Rollouts as RQ jobs: load, step the phase-in policy, save, apply, schedule the next step.

The rollout's progress is stored on the contract record, so every step is one
compare-and-set transition and a worker killed between steps loses nothing: the scheduled
step waits in Redis for the next worker. Each scheduled step carries a token; a step whose
token is no longer the stored one (a stale or duplicated job) changes nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from redis import Redis
from rq import Queue, get_current_job

from forestflow_control_plane import names
from forestflow_control_plane.platforms import knative
from forestflow_control_plane.platforms.base import Platform
from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.policies import expiry, phase_in
from forestflow_control_plane.policies.desired import LIVE_STATES, desired_state, nothing
from forestflow_control_plane.policies.gates import SLO, Gate, GateResult
from forestflow_control_plane.policies.phase_in import (
    Canary,
    Immediate,
    Linear,
    Plan,
    RolloutProgress,
    RolloutStatus,
    StepResult,
)
from forestflow_control_plane.rollouts.gate_metrics import (
    MetricsSource,
    MetricsUnavailableError,
    source_for,
)
from forestflow_control_plane.settings import Settings, SettingsError
from forestflow_control_plane.state.records import ContractSnapshot, VariantRecord, VariantState
from forestflow_control_plane.state.store import ConflictError, NotFoundError, Store

JOB_TIMEOUT_S = 600
# A step this late past its time has lost its scheduled job; the reconcile runs it.
OVERDUE_GRACE_S = 30.0


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


def plan_of(spec: dict[str, Any]) -> Plan:
    """The phase-in plan, gated or not, that a variant's stored model-file spec asks for."""
    phase = spec["rollout"]["phase_in"]
    gate = gate_of(spec)
    if phase["policy"] == "canary":
        return Canary(tuple(phase["steps"]), phase["hold_seconds"], gate)
    if phase["policy"] == "linear":
        return Linear(phase["duration_seconds"], phase["interval_seconds"], gate)
    return Immediate(gate)


def gate_of(spec: dict[str, Any]) -> Gate | None:
    settings = spec["rollout"].get("gate")
    if settings is None:
        return None
    slo = spec.get("slo") or {}
    return Gate(
        SLO(slo.get("p95_latency_ms"), slo.get("error_rate")),
        margin=settings["margin"],
        min_requests=settings["min_requests"],
        recheck_seconds=settings["recheck_seconds"],
    )


class Rollouts:
    def __init__(
        self,
        store: Store,
        platform: Platform,
        schedule: Schedule,
        metrics: MetricsSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._platform = platform
        self._schedule = schedule
        self._metrics = metrics
        self._clock = clock

    def start(self, contract: str, version: str) -> dict[str, Any]:
        """Begin `version`'s phase-in from the current split; an unfinished rollout of
        another version is aborted first (its split restored). Repeating it is harmless."""
        now = self._clock()

        def change(before: ContractSnapshot) -> tuple[ContractSnapshot, StepResult | None]:
            variant = _variant(before, version)
            record = before.contract.rollout
            if variant.state not in (VariantState.PENDING,) or (
                record is not None and record["candidate"] == version
            ):
                return before, None
            if variant.spec.get("shadow") is not None:
                return before.with_variant(replace(variant, state=VariantState.SHADOW)), None
            base = before
            if record is not None and _unfinished(record):
                plan = plan_of(before.variants[record["candidate"]].spec)
                aborted = phase_in.abort(
                    plan, RolloutProgress.from_dict(record["progress"]), f"superseded by {version}"
                )
                base = _with_result(before, plan, aborted, record["token"], now)
            previous = {v: p for v, p in base.contract.traffic.items() if p > 0}
            plan = plan_of(variant.spec)
            result = phase_in.start(plan, version, previous, now)
            token = (record["token"] if record else 0) + 1
            return _with_result(base, plan, result, token, now), result

        return self._open_window(self._transition(contract, version, change), now)

    def advance(self, contract: str, version: str, token: int) -> dict[str, Any]:
        """Step the rollout if `token` is still current, judging a gated step's metrics."""
        now = self._clock()
        verdict = self._judge(self._store.get(contract), version, token, now)

        def change(before: ContractSnapshot) -> tuple[ContractSnapshot, StepResult | None]:
            record = before.contract.rollout
            if record is None or record["candidate"] != version or record["token"] != token:
                return before, None
            plan = plan_of(_variant(before, version).spec)
            progress = RolloutProgress.from_dict(record["progress"])
            result = phase_in.step(plan, progress, now, verdict)
            after = _with_result(before, plan, result, token + 1, now)
            if verdict is not None:
                gate = {"passed": verdict.passed, "reason": verdict.reason, "at": now}
                rollout = {**(after.contract.rollout or {}), "gate": gate}
                after = replace(after, contract=replace(after.contract, rollout=rollout))
            return after, result

        return self._open_window(self._transition(contract, version, change), now)

    def _open_window(self, outcome: dict[str, Any], now: float) -> dict[str, Any]:
        """Read the metrics of a gated step that opens now: a scraped source is cumulative,
        and this reading is the baseline its window is measured from."""
        record = outcome["rollout"]
        progress = record and RolloutProgress.from_dict(record["progress"])
        if (
            self._metrics is None
            or not progress
            or progress.status is not RolloutStatus.RUNNING
            or progress.step_started_at != now
        ):
            return outcome
        snapshot = self._store.get(outcome["contract"])
        if plan_of(_variant(snapshot, progress.candidate).spec).gate is None:
            return outcome
        for version in (progress.candidate, _incumbent(progress)):
            if version is not None:
                with contextlib.suppress(MetricsUnavailableError):
                    self._metrics.window(outcome["contract"], version, now, now)
        return outcome

    def reconcile(self, contract: str) -> list[str]:
        """Re-evaluate the time-based policies of one contract and re-apply its desired state:
        run a rollout step whose scheduled job is overdue (lost with a flushed Redis, say),
        expire what the serving variant's ttl retires by now, and correct drift on the
        platform. Returns what it did, for the log; nothing when all was in order."""
        done = []
        snapshot = self._store.get(contract)
        record = snapshot.contract.rollout
        if (
            record is not None
            and record["progress"]["status"] == RolloutStatus.RUNNING
            and record.get("next_at") is not None
            and self._clock() > record["next_at"] + OVERDUE_GRACE_S
        ):
            self.advance(contract, record["candidate"], record["token"])
            done.append(f"ran the overdue step of {record['candidate']}")
            snapshot = self._store.get(contract)
        owner = _policy_owner(snapshot)
        if owner is not None and expire(snapshot, owner, self._clock()) != snapshot:

            def retire(before: ContractSnapshot | None) -> ContractSnapshot:
                if before is None:
                    raise NotFoundError(f"contract {contract!r} not found")
                current = _policy_owner(before)
                return before if current is None else expire(before, current, self._clock())

            snapshot = self._store.update(
                contract, retire, who="reconcile", what=f"expiry by {owner.version}"
            )
            done.append(f"expired by {owner.version}'s policy")
        if self._platform.apply(desired_state(snapshot)):
            done.append("re-applied the desired state")
        return done

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

    def _judge(
        self, snapshot: ContractSnapshot, version: str, token: int, now: float
    ) -> GateResult | None:
        """The gate's verdict on the candidate over its current step; None when ungated.
        Metrics that cannot be read leave the gate undecided: the step holds, never passes."""
        record = snapshot.contract.rollout
        if record is None or record["candidate"] != version or record["token"] != token:
            return None
        plan = plan_of(_variant(snapshot, version).spec)
        progress = RolloutProgress.from_dict(record["progress"])
        if plan.gate is None or progress.status is not RolloutStatus.RUNNING:
            return None
        if self._metrics is None:
            return GateResult(None, "undecided: no metrics source configured")
        since = progress.step_started_at
        incumbent = _incumbent(progress)
        name = snapshot.contract.name
        try:
            candidate = self._metrics.window(name, version, since, now)
            baseline = None if incumbent is None else self._metrics.window(
                name, incumbent, since, now
            )
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
        version = record["candidate"]
        if record.get("strategy") == "in_place":
            raise ConflictError(
                f"{action}: the in-place swap of {contract}@{version} takes no actions; it "
                "reverts on its own at the first replica that fails"
            )

        def change(before: ContractSnapshot) -> tuple[ContractSnapshot, StepResult | None]:
            current = before.contract.rollout
            if current is None or current["candidate"] != version:
                raise ConflictError(f"the rollout of {contract} changed; try again")
            plan = plan_of(_variant(before, version).spec)
            progress = RolloutProgress.from_dict(current["progress"])
            reason = f"{action} by {who}"
            try:
                if action is Action.RESUME:
                    result = phase_in.resume(plan, progress, now, reason)
                else:
                    result = getattr(phase_in, action.value)(plan, progress, reason)
            except phase_in.RolloutFinishedError as exc:
                raise ConflictError(f"rollout of {contract}@{version}: {exc}") from None
            token = current["token"] + 1
            return _with_result(before, plan, result, token, now), result

        return self._transition(contract, version, change, who=who)

    def _transition(
        self,
        contract: str,
        version: str,
        change: Callable[[ContractSnapshot], tuple[ContractSnapshot, StepResult | None]],
        who: str = "rollout",
    ) -> dict[str, Any]:
        outcome: list[StepResult | None] = [None]

        def apply_change(before: ContractSnapshot | None) -> ContractSnapshot:
            if before is None:
                raise NotFoundError(f"contract {contract!r} not found")
            after, outcome[0] = change(before)
            return after

        current = self._store.get(contract)
        if apply_change(current) == current:
            after = current
        else:
            after = self._store.update(
                contract, apply_change, who=who, what=lambda: _describe(version, outcome[0])
            )
            result = outcome[0]
            if result is not None and result.next_at is not None:
                record = after.contract.rollout
                assert record is not None
                self._schedule(StepCall(contract, version, record["token"], result.next_at))
        self._platform.apply(desired_state(after))
        return {
            "contract": contract,
            "version": version,
            "traffic": after.contract.traffic,
            "rollout": after.contract.rollout,
        }


def _with_result(
    before: ContractSnapshot, plan: Plan, result: StepResult, token: int, now: float
) -> ContractSnapshot:
    """The snapshot once `result` is applied: traffic, candidate state, rollout record,
    and, when the rollout succeeded, the candidate's expiry policy."""
    progress = result.progress
    candidate = before.variants[progress.candidate]
    state, reason = {
        RolloutStatus.RUNNING: (VariantState.PHASING_IN, ""),
        RolloutStatus.PAUSED: (VariantState.PHASING_IN, progress.reason),
        RolloutStatus.SUCCEEDED: (VariantState.SERVING, ""),
        RolloutStatus.ROLLED_BACK: (VariantState.FAILED, progress.reason),
        RolloutStatus.ABORTED: (VariantState.FAILED, progress.reason),
    }[progress.status]
    snapshot = before.with_variant(replace(candidate, state=state, reason=reason))
    traffic = {
        v: result.split.get(v, 0)
        for v, record in snapshot.variants.items()
        if record.state in LIVE_STATES
    }
    rollout = {
        "candidate": progress.candidate,
        "progress": progress.to_dict(),
        "token": token,
        "next_at": result.next_at,
    }
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


def _incumbent(progress: RolloutProgress) -> str | None:
    """The version the candidate is measured against: the largest share before the rollout."""
    return max(
        (v for v, p in progress.previous.items() if p > 0 and v != progress.candidate),
        key=lambda v: (progress.previous[v], v),
        default=None,
    )


def _policy_owner(snapshot: ContractSnapshot) -> VariantRecord | None:
    """Whose expiry policy rules the contract: its newest serving variant."""
    serving = [v for v in snapshot.variants.values() if v.state is VariantState.SERVING]
    return max(serving, key=lambda v: (v.created_at, v.version), default=None)


def _variant(snapshot: ContractSnapshot, version: str) -> VariantRecord:
    if version not in snapshot.variants:
        raise NotFoundError(f"variant {snapshot.contract.name}@{version} not found")
    return snapshot.variants[version]


def _unfinished(record: dict[str, Any]) -> bool:
    return RolloutStatus(record["progress"]["status"]) not in phase_in.FINISHED


def _describe(version: str, result: StepResult | None) -> str:
    if result is None:
        return f"rollout {version}"
    progress = result.progress
    split = ", ".join(f"{v} {p}%" for v, p in sorted(result.split.items()))
    if progress.status is RolloutStatus.RUNNING:
        return f"rollout {version}: step {progress.step + 1}: {split}"
    reason = f" ({progress.reason})" if progress.reason else ""
    return f"rollout {version}: {progress.status.value}{reason}: {split}"


def platform_for(settings: Settings, redis: Redis) -> Platform:
    if settings.platform == "local":
        return LocalPlatform(redis, settings.runtime_image, home=settings.home)
    if settings.platform == "knative":
        return knative.from_settings(settings)
    raise SettingsError(f"FF_PLATFORM: unknown platform {settings.platform!r} (local, knative)")


def rq_schedule(queue: Queue) -> Schedule:
    def schedule(call: StepCall) -> None:
        queue.enqueue_at(
            datetime.fromtimestamp(call.at, tz=UTC),
            advance_rollout,
            call.contract,
            call.version,
            call.token,
            job_timeout=JOB_TIMEOUT_S,
            description=f"rollout step {call.contract}@{call.version} #{call.token}",
        )

    return schedule


def for_job() -> Rollouts:
    """Rollouts wired to the current RQ job's connection and the worker's settings."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("rollout steps run inside RQ jobs")
    return build(Settings.from_env(), job.connection)


def build(settings: Settings, redis: Redis) -> Rollouts:
    """Rollouts as a worker runs them: the configured platform and metrics, RQ scheduling."""
    return Rollouts(
        Store(redis),
        platform_for(settings, redis),
        rq_schedule(Queue(names.ROLLOUT_QUEUE, connection=redis)),
        source_for(settings, redis),
    )


def start_rollout(contract: str, version: str) -> dict[str, Any]:
    """RQ entry point, enqueued by a deploy."""
    return for_job().start(contract, version)


def advance_rollout(contract: str, version: str, token: int) -> dict[str, Any]:
    """RQ entry point, scheduled by the previous step."""
    return for_job().advance(contract, version, token)
