"""Every object each rollout policy produces passes both admission layers: the scenarios run
through Rollouts on a memory platform that records all it was given, and hypothesis draws
splits and model files the way users and policies make them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import Redis

from forestflow_control_plane.knative.admission import check_all, problems
from forestflow_control_plane.knative.resources import make_objects, make_route, make_service
from forestflow_control_plane.policies.desired import DesiredState, DesiredVariant
from forestflow_control_plane.policies.split import shift
from forestflow_control_plane.rollouts.deploys import register, swap_of
from forestflow_control_plane.rollouts.engine import Action, Rollouts, StepCall
from forestflow_control_plane.rollouts.in_place import InPlace
from forestflow_control_plane.spec.model_file import validate_model_file
from forestflow_control_plane.state.store import Store
from tests.control_plane.memory_platform import MemoryPlatform

from .test_rollouts import C, Clock, variant
from .test_store import model_file


class Recording(MemoryPlatform):
    """A memory platform that keeps every object any apply produced, not only the last."""

    def __init__(self) -> None:
        super().__init__()
        self.produced: list[dict[str, Any]] = []

    def apply(self, state: DesiredState) -> bool:
        self.produced.extend(make_objects(state, self.image))
        return super().apply(state)


@dataclass
class World:
    store: Store
    platform: Recording
    clock: Clock
    scheduled: list[StepCall]
    rollouts: Rollouts


def world_for(redis: Redis) -> World:
    clock, platform, scheduled = Clock(), Recording(), list[StepCall]()
    store = Store(redis, clock=clock)
    return World(store, platform, clock, scheduled,
                 Rollouts(store, platform, scheduled.append, clock=clock))


def with_model(version: str, **top: Any) -> Any:
    data = model_file(version).model_dump(mode="json", by_alias=True)
    return validate_model_file({**data, **top})


def immediate(world: World) -> None:
    register(world.store, variant("v1"), who="t")
    world.rollouts.start(C, "v1")


def walk(world: World, version: str, model: Any) -> None:
    """Start `version` after v1, then run each scheduled step at its time until none is left."""
    immediate(world)
    register(world.store, model, who="t")
    world.rollouts.start(C, version)
    while world.scheduled:
        call = world.scheduled.pop()
        world.clock.now = call.at
        world.rollouts.advance(C, version, call.token)


def canary(world: World) -> None:
    walk(world, "v2", variant("v2", {"policy": "canary", "steps": [10, 50, 100],
                                     "hold_seconds": 30}, on_replacement=True))


def linear(world: World) -> None:
    walk(world, "v2", variant("v2", {"policy": "linear", "duration_seconds": 600,
                                     "interval_seconds": 200}, keep_latest=1))


def rollback(world: World) -> None:
    immediate(world)
    register(world.store, variant("v2", {"policy": "canary", "steps": [20, 100]}), who="t")
    world.rollouts.start(C, "v2")
    world.rollouts.act(C, Action.ROLLBACK, "t")


def shadow(world: World) -> None:
    immediate(world)
    register(world.store, variant("v2", shadow={"sample_rate": 0.5}), who="t")
    world.rollouts.start(C, "v2")


def sticky(world: World) -> None:
    immediate(world)
    model = with_model("v2", routing={"sticky_header": "x-user-id"},
                       rollout={"phase_in": {"policy": "canary", "steps": [30, 100]}})
    register(world.store, model, who="t")
    world.rollouts.start(C, "v2")


def ttl_expiry(world: World) -> None:
    immediate(world)
    world.clock.now += 100
    register(world.store, variant("v2", ttl_seconds=300), who="t")
    world.rollouts.start(C, "v2")
    world.clock.now += 300
    world.rollouts.reconcile(C)


def in_place(world: World) -> None:
    """New weights for the serving v1: with no replica running they are tried on a trial
    replica (recorded, not started, by the memory platform), then v1 takes revision 2."""
    immediate(world)
    new = with_model("v1", rollout={"strategy": "in_place"})
    artifact = {**new.variant.model.model_dump(mode="json", by_alias=True), "uri": "new.pt"}
    wanted = swap_of(world.store.get(C), with_model(
        "v1", rollout={"strategy": "in_place"},
        variant={**new.variant.model_dump(mode="json", by_alias=True), "model": artifact}))
    assert wanted is not None
    with httpx.Client() as client:
        swap = InPlace(world.store, world.platform, world.platform.replica_urls, client)
        swap.run(C, "v1", wanted)


def splits(platform: Recording) -> list[dict[str, int]]:
    """Each Route's split, in the order applied, repeats dropped."""
    seen: list[dict[str, int]] = []
    for obj in platform.produced:
        if obj["kind"] == "Route":
            split = {t["tag"]: t["percent"] for t in obj["spec"]["traffic"]}
            if not seen or seen[-1] != split:
                seen.append(split)
    return seen


SCENARIOS: list[tuple[str, Callable[[World], None], list[dict[str, int]]]] = [
    ("immediate", immediate, [{"v1": 100}]),
    ("canary steps", canary,
     [{"v1": 100}, {"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}, {"v1": 0, "v2": 100},
      {"v2": 100}]),
    ("linear phase-in", linear,
     [{"v1": 100}, {"v1": 66, "v2": 34}, {"v1": 33, "v2": 67}, {"v1": 0, "v2": 100},
      {"v2": 100}]),
    ("rollback", rollback, [{"v1": 100}, {"v1": 80, "v2": 20}, {"v1": 100}]),
    ("shadow", shadow, [{"v1": 100}]),
    ("sticky header", sticky, [{"v1": 100}, {"v1": 70, "v2": 30}]),
    ("ttl expiry", ttl_expiry, [{"v1": 100}, {"v1": 0, "v2": 100}, {"v2": 100}]),
    ("in-place revision bump", in_place, [{"v1": 100}]),
]


@pytest.mark.parametrize(
    ("name", "scenario", "want"), SCENARIOS, ids=[row[0] for row in SCENARIOS]
)
def test_every_policy_output_validates(
    redis: Redis, name: str, scenario: Callable[[World], None], want: list[dict[str, int]]
) -> None:
    world = world_for(redis)
    scenario(world)
    assert splits(world.platform) == want
    check_all([*world.platform.produced, *world.platform.trials])


def test_the_scenarios_reach_what_they_name(redis: Redis) -> None:
    """The shadow, sticky and in-place objects really are among what was validated."""
    runs = {}
    for name, scenario, _ in SCENARIOS:
        redis.flushdb()
        world = world_for(redis)
        scenario(world)
        runs[name] = world.platform
    names = {o["metadata"]["name"] for o in runs["shadow"].produced}
    assert "ff-mlp-v2" in names
    notes = [o["metadata"].get("annotations", {}) for o in runs["sticky header"].produced]
    assert {"forestflow.dev/sticky-header": "x-user-id"} in notes
    revisions = {t["revisionName"] for o in runs["in-place revision bump"].produced
                 if o["kind"] == "Route" for t in o["spec"]["traffic"]}
    assert len(revisions) == 2  # the swap's new weights are a new revision of ff-mlp-v1
    assert all(r.startswith("ff-mlp-v1-") for r in revisions)
    assert runs["in-place revision bump"].trials


EXAMPLE = model_file("v1").model_dump(mode="json", by_alias=True)


@st.composite
def shifted(draw: st.DrawFn) -> dict[str, int]:
    """A split as the policies make it: shift() from a random previous split."""
    n = draw(st.integers(min_value=0, max_value=6))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=max(n - 1, 0), max_size=n - 1))
                  ) if n else []
    shares = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)] if n else []
    previous = {f"v{i}": share for i, share in enumerate(shares, start=1)}
    candidate = draw(st.sampled_from([*previous, f"v{n + 1}"]))
    return shift(previous, candidate, draw(st.integers(0, 100)))


@settings(max_examples=200, deadline=None)
@given(split=shifted(), sticky=st.sampled_from([None, "x-user-id"]))
def test_any_split_the_policies_make_is_a_route_a_cluster_accepts(
    split: dict[str, int], sticky: str | None
) -> None:
    variants = tuple(DesiredVariant(version, EXAMPLE["variant"]) for version in split)
    revisions = {version: f"ff-mlp-{version}-1a2b3c4" for version in split}
    route = make_route(DesiredState(C, EXAMPLE["contract"], split, variants, sticky), revisions)
    assert route is not None
    assert problems(route) == []


@settings(max_examples=100, deadline=None)
@given(
    scaling=st.fixed_dictionaries({
        "min_replicas": st.integers(0, 10),
        "max_replicas": st.integers(10, 100),
        "metric": st.sampled_from(["concurrency", "rps"]),
        "target_concurrency": st.integers(1, 10_000),
        "initial_replicas": st.none() | st.integers(0, 10),
        "window_seconds": st.none() | st.integers(6, 3600),
        "container_concurrency": st.integers(0, 1000),
        "retention_seconds": st.floats(0, 3600),
        "progress_deadline_seconds": st.integers(1, 86_400),
    }),
    timeout_ms=st.integers(1, 3_600_000),
)
def test_any_valid_model_file_makes_a_service_a_cluster_accepts(
    scaling: dict[str, Any], timeout_ms: int
) -> None:
    data = copy.deepcopy(EXAMPLE)
    data["variant"]["scaling"] = scaling
    data["variant"]["batching"]["timeout_ms"] = timeout_ms
    model = validate_model_file(data)
    spec = model.variant.model_dump(mode="json", by_alias=True)
    contract = model.contract.model_dump(mode="json", exclude={"name"})
    assert problems(make_service(C, contract, DesiredVariant("v1", spec), "runtime:test")) == []
