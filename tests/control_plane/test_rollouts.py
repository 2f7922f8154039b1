from __future__ import annotations

import copy
from typing import Any

import pytest
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.platforms.local.platform import LocalPlatform
from forestflow_control_plane.policies.gates import Metrics
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.engine import OVERDUE_GRACE_S, Action, Rollouts, StepCall
from forestflow_control_plane.rollouts.gate_metrics import MetricsUnavailableError
from forestflow_control_plane.rollouts.reconcile import reconcile_all
from forestflow_control_plane.spec.model_file import ModelFile, validate_model_file
from forestflow_control_plane.state.records import VariantState
from forestflow_control_plane.state.store import ConflictError, Store
from tests.control_plane.memory_platform import MemoryPlatform

from .test_store import model_file

C = "examples/mlp"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def variant(
    version: str,
    phase_in: dict[str, Any] | None = None,
    gate: dict[str, Any] | None = None,
    slo: dict[str, Any] | None = None,
    shadow: Any = None,
    **expiry: Any,
) -> ModelFile:
    data = model_file(version).model_dump(mode="json", by_alias=True)
    if phase_in:
        data["rollout"] = {"phase_in": phase_in}
    if gate is not None:
        data["rollout"] = {**data.get("rollout", {}), "gate": gate}
    data["slo"] = slo or {}
    data["shadow"] = shadow
    data["expiry"] = expiry
    return validate_model_file(data)


class Measured:
    """A metrics source that answers what the test says each variant measured; a version
    it has no numbers for is unavailable, as an unreachable Prometheus would be."""

    def __init__(self) -> None:
        self.by_version: dict[str, Metrics] = {}
        self.asked: list[tuple[str, str, float, float]] = []

    def window(self, contract: str, version: str, since: float, now: float) -> Metrics:
        self.asked.append((contract, version, since, now))
        if version not in self.by_version:
            raise MetricsUnavailableError(f"no series for {version}")
        return self.by_version[version]


@pytest.fixture
def measured() -> Measured:
    return Measured()


@pytest.fixture
def world(
    redis: Redis, measured: Measured
) -> tuple[Store, MemoryPlatform, list[StepCall], Clock, Rollouts]:
    clock = Clock()
    store, platform, scheduled = Store(redis, clock=clock), MemoryPlatform(), []
    rollouts = Rollouts(store, platform, scheduled.append, lambda: measured, clock=clock)
    return store, platform, scheduled, clock, rollouts


def test_immediate_moves_all_traffic_and_a_repeat_changes_nothing(world: Any) -> None:
    store, platform, scheduled, _, rollouts = world
    register(store, variant("v1"), who="t")
    assert rollouts.start(C, "v1")["traffic"] == {"v1": 100}
    snapshot = store.get(C)
    assert snapshot.variants["v1"].state is VariantState.SERVING
    assert scheduled == []
    events, objects = len(store.events(C)), dict(platform.objects)
    rollouts.start(C, "v1")
    assert store.get(C) == snapshot
    assert len(store.events(C)) == events
    assert platform.objects == objects


def test_canary_walks_its_steps_then_expires_the_replaced(world: Any) -> None:
    store, platform, scheduled, clock, rollouts = world
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    canary = {"policy": "canary", "steps": [10, 50, 100], "hold_seconds": 30}
    register(store, variant("v2", canary, on_replacement=True), who="t")
    assert rollouts.start(C, "v2")["traffic"] == {"v1": 90, "v2": 10}
    assert store.get(C).variants["v2"].state is VariantState.PHASING_IN
    route = platform.objects[("Route", "examples", "mlp")]
    assert [(t["tag"], t["percent"]) for t in route["spec"]["traffic"]] == [("v1", 90), ("v2", 10)]

    first = scheduled[-1]
    assert (first.at, first.version) == (1030.0, "v2")
    clock.now = 1010.0  # a step run early holds, and the early token is spent
    events = store.events(C)
    rollouts.advance(C, "v2", first.token)
    assert store.get(C).contract.traffic == {"v1": 90, "v2": 10}
    assert store.events(C) == events  # a step that holds is no transition: no event
    clock.now = 1030.0
    assert rollouts.advance(C, "v2", first.token)["traffic"] == {"v1": 90, "v2": 10}  # stale
    for want in ({"v1": 50, "v2": 50}, {"v1": 0, "v2": 100}):
        rollouts.advance(C, "v2", scheduled[-1].token)
        assert store.get(C).contract.traffic == want
        clock.now = scheduled[-1].at
    rollouts.advance(C, "v2", scheduled[-1].token)
    snapshot = store.get(C)
    assert snapshot.variants["v2"].state is VariantState.SERVING
    assert snapshot.variants["v1"].state is VariantState.EXPIRED
    assert snapshot.contract.traffic == {"v2": 100}
    assert ("Service", "examples", "ff-mlp-v1") not in platform.objects
    whats = [e.what for e in store.events(C)][-3:]
    assert whats[0].startswith("rollout v2: step 2: v1 50%, v2 50%"), whats
    assert whats[-1].startswith("rollout v2: succeeded")


def test_pause_holds_resume_continues_rollback_restores(world: Any) -> None:
    store, _, scheduled, clock, rollouts = world
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    canary = {"policy": "canary", "steps": [20, 100], "hold_seconds": 10}
    register(store, variant("v2", canary), who="t")
    rollouts.start(C, "v2")
    rollouts.act(C, Action.PAUSE, "alice")
    clock.now += 60
    rollouts.advance(C, "v2", scheduled[-1].token)
    assert store.get(C).contract.traffic == {"v1": 80, "v2": 20}
    count = len(scheduled)
    rollouts.act(C, Action.RESUME, "alice")
    assert len(scheduled) == count + 1
    rollouts.act(C, Action.ROLLBACK, "bob")
    snapshot = store.get(C)
    assert snapshot.contract.traffic == {"v1": 100}
    assert snapshot.variants["v2"].state is VariantState.FAILED
    assert snapshot.variants["v2"].reason == "rollback by bob"
    with pytest.raises(ConflictError, match="already rolled_back"):
        rollouts.act(C, Action.PROMOTE, "alice")


def test_promote_skips_the_remaining_steps(world: Any) -> None:
    store, _, _, _, rollouts = world
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    register(store, variant("v2", {"policy": "linear", "duration_seconds": 600}), who="t")
    assert rollouts.start(C, "v2")["traffic"] == {"v1": 95, "v2": 5}
    rollouts.act(C, Action.PROMOTE, "alice")
    assert store.get(C).contract.traffic == {"v1": 0, "v2": 100}


def test_a_new_deploy_aborts_the_running_rollout_first(world: Any) -> None:
    store, _, _, _, rollouts = world
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    canary = {"policy": "canary", "steps": [50, 100], "hold_seconds": 10}
    register(store, variant("v2", canary), who="t")
    rollouts.start(C, "v2")
    register(store, variant("v3", canary), who="t")
    assert rollouts.start(C, "v3")["traffic"] == {"v1": 50, "v3": 50}
    snapshot = store.get(C)
    assert snapshot.variants["v2"].state is VariantState.FAILED
    assert snapshot.variants["v2"].reason == "superseded by v3"


def test_actions_without_a_rollout_conflict(world: Any) -> None:
    store, _, _, _, rollouts = world
    register(store, variant("v1"), who="t")
    with pytest.raises(ConflictError, match="no rollout"):
        rollouts.act(C, Action.PAUSE, "alice")


GOOD = Metrics(p95_latency_ms=20.0, error_rate=0.0, requests=500)
SLOW = Metrics(p95_latency_ms=900.0, error_rate=0.0, requests=500)
CANARY = {"policy": "canary", "steps": [10, 100], "hold_seconds": 30}
GATE = {"min_requests": 100, "recheck_seconds": 5}


def gated_v2(store: Store, rollouts: Rollouts) -> None:
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    register(store, variant("v2", CANARY, GATE, {"p95_latency_ms": 100}), who="t")
    rollouts.start(C, "v2")


def test_a_gate_that_passes_lets_the_canary_walk(world: Any, measured: Measured) -> None:
    store, _, scheduled, clock, rollouts = world
    gated_v2(store, rollouts)
    assert scheduled[-1].at == 1005.0  # checked through the hold, not only at its end
    measured.by_version = {"v1": GOOD, "v2": GOOD}
    clock.now = 1030.0
    rollouts.advance(C, "v2", scheduled[-1].token)
    record = store.get(C).contract
    assert record.traffic == {"v1": 0, "v2": 100}
    assert record.rollout is not None and record.rollout.gate is not None
    assert record.rollout.gate.passed is True
    assert measured.asked == [
        (C, "v2", 1000.0, 1000.0), (C, "v1", 1000.0, 1000.0),  # step 1 opens: baselines
        (C, "v2", 1000.0, 1030.0), (C, "v1", 1000.0, 1030.0),  # its gate: the window
        (C, "v2", 1030.0, 1030.0), (C, "v1", 1030.0, 1030.0),  # step 2 opens
    ]


def test_a_failing_gate_rolls_back_mid_hold_and_records_why(
    world: Any, measured: Measured
) -> None:
    store, platform, scheduled, clock, rollouts = world
    gated_v2(store, rollouts)
    measured.by_version = {"v1": GOOD, "v2": SLOW}
    clock.now = 1005.0
    rollouts.advance(C, "v2", scheduled[-1].token)
    snapshot = store.get(C)
    assert snapshot.contract.traffic == {"v1": 100}
    assert snapshot.variants["v2"].state is VariantState.FAILED
    assert "p95_latency_ms 900 ms over SLO 100 ms" in snapshot.variants["v2"].reason
    route = platform.objects[("Route", "examples", "mlp")]
    assert [(t["tag"], t["percent"]) for t in route["spec"]["traffic"]] == [("v1", 100)]


def test_unreadable_metrics_hold_the_step_and_never_pass_it(
    world: Any, measured: Measured
) -> None:
    store, _, scheduled, clock, rollouts = world
    gated_v2(store, rollouts)
    clock.now = 1060.0
    events = len(store.events(C))
    rollouts.advance(C, "v2", scheduled[-1].token)
    assert len(store.events(C)) == events
    record = store.get(C).contract
    assert record.traffic == {"v1": 90, "v2": 10}
    assert record.rollout is not None and record.rollout.gate is not None
    assert record.rollout.gate.passed is None
    assert "metrics unavailable: no series for v2" in record.rollout.gate.reason
    assert scheduled[-1].at == 1065.0


def test_a_shadow_runs_beside_the_split_and_takes_no_traffic(world: Any) -> None:
    store, platform, _, _, rollouts = world
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    register(store, variant("v2", shadow={"sample_rate": 0.5}), who="t")
    rollouts.start(C, "v2")
    snapshot = store.get(C)
    assert snapshot.variants["v2"].state is VariantState.SHADOW
    assert snapshot.contract.traffic == {"v1": 100}
    assert snapshot.contract.rollout is not None
    assert snapshot.contract.rollout.candidate == "v1"
    assert ("Service", "examples", "ff-mlp-v2") in platform.objects
    route = platform.objects[("Route", "examples", "mlp")]
    assert [t["tag"] for t in route["spec"]["traffic"]] == ["v1"]


def test_reconcile_expires_by_ttl_once_old_enough(world: Any) -> None:
    store, platform, _, clock, rollouts = world
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    clock.now = 1100.0
    register(store, variant("v2", ttl_seconds=300), who="t")
    rollouts.start(C, "v2")
    assert rollouts.reconcile(C) == []
    clock.now = 1299.0  # v1 is 299 s old
    assert rollouts.reconcile(C) == []
    clock.now = 1300.0
    assert rollouts.reconcile(C) == ["expired by v2's policy", "re-applied the desired state"]
    snapshot = store.get(C)
    assert snapshot.variants["v1"].state is VariantState.EXPIRED
    assert snapshot.variants["v2"].state is VariantState.SERVING  # serving: protected
    assert ("Service", "examples", "ff-mlp-v1") not in platform.objects
    assert store.events(C)[-1].who == "reconcile"


def test_reconcile_puts_back_what_drifted(world: Any) -> None:
    store, platform, _, _, rollouts = world
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    wanted = copy.deepcopy(platform.objects)
    del platform.objects[("Route", "examples", "mlp")]
    platform.objects[("Service", "examples", "ff-mlp-v1")]["spec"] = {}
    assert rollouts.reconcile(C) == ["re-applied the desired state"]
    assert platform.objects == wanted


def test_reconcile_runs_a_step_whose_job_was_lost(world: Any) -> None:
    store, _, scheduled, clock, rollouts = world
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    register(store, variant("v2", {"policy": "canary", "steps": [10, 100], "hold_seconds": 30}),
              who="t")
    rollouts.start(C, "v2")
    scheduled.clear()  # the scheduled step is lost
    clock.now = 1030.0 + OVERDUE_GRACE_S - 1
    assert rollouts.reconcile(C) == []
    clock.now = 1030.0 + OVERDUE_GRACE_S + 1
    assert rollouts.reconcile(C) == ["ran the overdue step of v2"]
    assert store.get(C).contract.traffic == {"v1": 0, "v2": 100}
    assert len(scheduled) == 1


def test_a_reconcile_pass_removes_what_a_deleted_contract_left_on_the_platform(
    redis: Redis,
) -> None:
    store, platform = Store(redis), LocalPlatform(redis, "runtime:test")
    rollouts = Rollouts(store, platform, lambda call: None)
    other = model_file("v1").model_dump(mode="json", by_alias=True)
    other["contract"]["name"] = "examples/other"
    for model in (variant("v1"), validate_model_file(other)):
        register(store, model, who="t")
        rollouts.start(model.contract.name, "v1")
    assert platform.contracts() == {C, "examples/other"}
    # A rollout job that raced the delete re-applied after the delete's own apply.
    store.delete("examples/other", who="t")
    assert reconcile_all(rollouts, store.contracts()) == {
        "examples/other": ["removed the objects of a deleted contract"]
    }
    assert platform.contracts() == {C}
    assert redis.hkeys(names.LOCAL_SERVICES) == [b"examples/ff-mlp-v1"]
    assert redis.hkeys(names.LOCAL_ROUTES) == [b"examples/mlp"]
    assert reconcile_all(rollouts, store.contracts()) == {}


def v1_then_canaries(world: Any, versions: tuple[str, ...], apart_s: float = 0.0) -> None:
    """v1 serving, then canaries of `versions` deployed `apart_s` apart, none started."""
    store, _, _, clock, rollouts = world
    register(store, variant("v1"), who="t")
    rollouts.start(C, "v1")
    canary = {"policy": "canary", "steps": [10, 100], "hold_seconds": 30}
    for version in versions:
        register(store, variant(version, phase_in=canary), who="t")
        clock.now += apart_s


def test_a_deploy_whose_start_job_was_lost_is_started_by_the_reconcile(
    world: tuple[Store, MemoryPlatform, list[StepCall], Clock, Rollouts],
) -> None:
    """A crash between the deploy's write and its enqueue: the variant is stored pending
    and no job will ever start it."""
    store, _, _, clock, rollouts = world
    v1_then_canaries(world, ("v2", "v3"))
    clock.now += OVERDUE_GRACE_S - 1
    assert "started" not in " ".join(rollouts.reconcile(C))  # its job may be on its way
    clock.now += 2.0
    assert rollouts.reconcile(C) == [
        "started the rollout of v2, whose job was lost",
        "started the rollout of v3, whose job was lost",
    ]
    snapshot = store.get(C)
    assert snapshot.contract.rollout is not None and snapshot.contract.rollout.candidate == "v3"
    assert snapshot.contract.traffic == {"v1": 90, "v3": 10}
    assert snapshot.variants["v2"].state is not VariantState.PENDING
    assert rollouts.reconcile(C) == []


def test_a_lost_deploy_older_than_the_running_rollout_stays_superseded(
    world: tuple[Store, MemoryPlatform, list[StepCall], Clock, Rollouts],
) -> None:
    """v2's start job was lost, and v3 was deployed and started since: starting v2 now
    would abort the newer rollout."""
    store, _, _, clock, rollouts = world
    v1_then_canaries(world, ("v2", "v3"), apart_s=1.0)
    rollouts.start(C, "v3")
    clock.now += OVERDUE_GRACE_S + 1
    assert "started" not in " ".join(rollouts.reconcile(C))
    record = store.get(C).contract.rollout
    assert record is not None and (record.candidate, record.status.value) == ("v3", "running")
