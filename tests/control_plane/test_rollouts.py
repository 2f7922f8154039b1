from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from forestflow_control_plane.deployments import register
from forestflow_control_plane.model_file import ModelFile, validate_model_file
from forestflow_control_plane.platforms.memory import MemoryPlatform
from forestflow_control_plane.records import VariantState
from forestflow_control_plane.rollouts import Action, Rollouts, StepCall
from forestflow_control_plane.store import ConflictError, Store

from .test_store import model_file

C = "examples/mlp"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def variant(version: str, phase_in: dict[str, Any] | None = None, **expiry: Any) -> ModelFile:
    data = model_file(version).model_dump(mode="json", by_alias=True)
    if phase_in:
        data["rollout"] = {"phase_in": phase_in}
    data["expiry"] = expiry
    return validate_model_file(data)


@pytest.fixture
def world(redis: Redis) -> tuple[Store, MemoryPlatform, list[StepCall], Clock, Rollouts]:
    clock = Clock()
    store, platform, scheduled = Store(redis, clock=clock), MemoryPlatform(), []
    return store, platform, scheduled, clock, Rollouts(store, platform, scheduled.append, clock)


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
    rollouts.advance(C, "v2", first.token)
    assert store.get(C).contract.traffic == {"v1": 90, "v2": 10}
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
