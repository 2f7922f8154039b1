from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from redis import Redis

from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.spec.model_file import ModelFile, validate_model_file
from forestflow_control_plane.state.records import ContractSnapshot, VariantState
from forestflow_control_plane.state.store import ConflictError, NotFoundError, Store

REPO = Path(__file__).resolve().parents[2]
# How long a writer may wait for the other to reach the same point, or to finish, before the
# test fails rather than hangs: a bound for a loaded machine, never what the test asserts.
GUARD_S = 60.0


def model_file(version: str = "v1") -> ModelFile:
    data = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
    data["variant"]["version"] = version
    return validate_model_file(data)


def together(*writers: Callable[[], None]) -> None:
    """Run each writer on its own thread and wait for all of them; an exception in any (a
    barrier broken by the guard included) fails the test with it."""
    errors: list[Exception] = []

    def run(writer: Callable[[], None]) -> None:
        try:
            writer()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD_S)
    assert not any(thread.is_alive() for thread in threads), "a writer never finished"
    if errors:
        raise errors[0]


def test_register_creates_contract_and_variant(redis: Redis) -> None:
    store = Store(redis, clock=lambda: 100.0)
    register(store, model_file("v1"), who="alice")
    snapshot = store.get("examples/mlp")
    assert snapshot.contract.generation == 1
    assert snapshot.contract.created_at == 100.0
    assert list(snapshot.variants) == ["v1"]
    assert snapshot.variants["v1"].state is VariantState.PENDING
    assert snapshot.variants["v1"].spec["model"]["class"] == "model:MLP"
    assert store.contracts() == ["examples/mlp"]


def test_redeploying_the_same_file_changes_nothing(redis: Redis) -> None:
    store = Store(redis)
    register(store, model_file("v1"), who="alice")
    before = store.get("examples/mlp")
    assert register(store, model_file("v1"), who="bob") == before
    assert store.get("examples/mlp") == before
    assert len(store.events("examples/mlp")) == 1


def test_another_spec_under_an_existing_version_is_a_conflict(redis: Redis) -> None:
    store = Store(redis)
    register(store, model_file("v1"), who="alice")
    before = store.get("examples/mlp")
    changed = model_file("v1")
    batching = changed.variant.batching.model_copy(update={"max_batch_size": 4})
    changed = changed.model_copy(
        update={"variant": changed.variant.model_copy(update={"batching": batching})}
    )
    with pytest.raises(ConflictError, match=r"variant\.version"):
        register(store, changed, who="bob")
    assert store.get("examples/mlp") == before
    assert len(store.events("examples/mlp")) == 1


def test_changed_contract_schema_is_refused(redis: Redis) -> None:
    store = Store(redis)
    register(store, model_file("v1"), who="alice")
    other = model_file("v2")
    inputs = [other.contract.inputs[0].model_copy(update={"shape": [-1, 5]})]
    contract = other.contract.model_copy(update={"inputs": inputs})
    other = other.model_copy(update={"contract": contract})
    with pytest.raises(ConflictError, match="contract"):
        register(store, other, who="alice")


def test_stale_generation_gets_conflict(redis: Redis) -> None:
    store = Store(redis)
    register(store, model_file("v1"), who="alice")

    def set_traffic(before: ContractSnapshot | None) -> ContractSnapshot:
        assert before is not None
        return replace(before, contract=replace(before.contract, traffic={"v1": 100}))

    store.update("examples/mlp", set_traffic, who="a", what="t", expected_generation=1)
    with pytest.raises(ConflictError, match="generation 2"):
        store.update("examples/mlp", set_traffic, who="b", what="t", expected_generation=1)


def test_of_two_concurrent_writers_one_wins_and_the_other_writes_again_on_top(
    redis_url: str, redis: Redis
) -> None:
    store = Store(redis)
    register(store, model_file("v1"), who="alice")
    both_read = threading.Barrier(2, timeout=GUARD_S)
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def writer(name: str) -> Callable[[], None]:
        own = Store(Redis.from_url(redis_url))

        def change(before: ContractSnapshot | None) -> ContractSnapshot:
            assert before is not None
            seen[name].append(before.variants["v1"].reason)
            if len(seen[name]) == 1:
                both_read.wait()  # both have read the same generation
            variant = replace(before.variants["v1"], reason=before.variants["v1"].reason + name)
            return before.with_variant(variant)

        return lambda: own.update("examples/mlp", change, who=name, what=f"write {name}") and None

    together(writer("a"), writer("b"))
    (loser,) = [name for name, reads in seen.items() if len(reads) == 2]
    winner = "b" if loser == "a" else "a"
    assert seen[loser] == ["", winner]  # it lost, then changed what had won
    variant = store.get("examples/mlp").variants["v1"]
    assert (variant.reason, variant.generation) == (winner + loser, 3)
    assert [e.what for e in store.events("examples/mlp")][-2:] == [
        f"write {winner}", f"write {loser}"
    ]


def test_a_writer_that_loses_every_race_gives_up_with_a_conflict(
    redis_url: str, redis: Redis
) -> None:
    store = Store(redis)
    register(store, model_file("v1"), who="alice")
    other = Store(Redis.from_url(redis_url))
    tries = []

    def touch(before: ContractSnapshot | None) -> ContractSnapshot:
        assert before is not None
        return before.with_variant(replace(before.variants["v1"], reason=f"touch {len(tries)}"))

    def always_beaten(before: ContractSnapshot | None) -> ContractSnapshot:
        assert before is not None
        tries.append(before.variants["v1"].reason)
        other.update("examples/mlp", touch, who="other", what="touch")
        return before.with_variant(replace(before.variants["v1"], reason="never"))

    with pytest.raises(ConflictError, match="changed concurrently 5 times in a row"):
        store.update("examples/mlp", always_beaten, who="a", what="w")
    assert tries == ["", "touch 1", "touch 2", "touch 3", "touch 4"]  # each on what beat it
    assert store.get("examples/mlp").variants["v1"].reason == "touch 5"


def test_events_record_who_what_before_after(redis: Redis) -> None:
    store = Store(redis, clock=lambda: 42.0)
    register(store, model_file("v1"), who="alice")
    (event,) = store.events("examples/mlp")
    assert (event.who, event.what, event.when) == ("alice", "deploy v1", 42.0)
    assert event.before == {}
    assert event.after == {"traffic": {}, "variants": {"v1": "pending"}}


def test_unknown_contract(redis: Redis) -> None:
    with pytest.raises(NotFoundError):
        Store(redis).get("no/such")


def test_delete_removes_the_contract_and_keeps_its_audit_log(redis: Redis) -> None:
    store = Store(redis, clock=lambda: 7.0)
    register(store, model_file("v1"), who="alice")
    register(store, model_file("v2"), who="alice")
    before = store.get("examples/mlp")
    assert store.delete("examples/mlp", who="bob") == before
    with pytest.raises(NotFoundError):
        store.get("examples/mlp")
    assert store.contracts() == []
    assert redis.keys("ff:contract:*") == redis.keys("ff:variants:*") == []
    *_, last = store.events("examples/mlp")
    assert (last.who, last.what, last.when) == ("bob", "deleted by bob", 7.0)
    assert last.before == {"traffic": {}, "variants": {"v1": "pending", "v2": "pending"}}
    assert last.after == {}
    with pytest.raises(NotFoundError, match="examples/mlp"):
        store.delete("examples/mlp", who="bob")
    assert len(store.events("examples/mlp")) == 3


def test_delete_refused_by_its_check_or_a_stale_generation_changes_nothing(redis: Redis) -> None:
    store = Store(redis)
    register(store, model_file("v1"), who="alice")
    before = store.get("examples/mlp")

    def refuse(snapshot: ContractSnapshot) -> None:
        raise ConflictError(f"{snapshot.contract.name} is busy")

    with pytest.raises(ConflictError, match="busy"):
        store.delete("examples/mlp", who="bob", check=refuse)
    with pytest.raises(ConflictError, match="generation 1, not 2"):
        store.delete("examples/mlp", who="bob", expected_generation=2)
    assert store.get("examples/mlp") == before
    assert store.contracts() == ["examples/mlp"]
    assert len(store.events("examples/mlp")) == 1
    store.delete("examples/mlp", who="bob", expected_generation=1)
    assert store.contracts() == []


def test_a_write_between_read_and_delete_makes_the_delete_read_again(
    redis_url: str, redis: Redis
) -> None:
    store = Store(redis)
    register(store, model_file("v1"), who="alice")
    other = Store(Redis.from_url(redis_url))
    checked: list[str] = []

    def meanwhile(snapshot: ContractSnapshot) -> None:
        """Another writer commits after the delete has read and before it commits, once."""
        checked.append(snapshot.variants["v1"].reason)
        if len(checked) == 1:
            variant = replace(snapshot.variants["v1"], reason="touched")
            other.update("examples/mlp", lambda b: snapshot.with_variant(variant), who="c",
                         what="w")

    deleted = store.delete("examples/mlp", who="bob", check=meanwhile)
    assert checked == ["", "touched"]  # checked again, on what the writer committed
    assert deleted.variants["v1"].reason == "touched"
    assert store.contracts() == []
    assert [e.what for e in store.events("examples/mlp")][-2:] == ["w", "deleted by bob"]


def test_of_a_concurrent_delete_and_update_one_wins(redis_url: str, redis: Redis) -> None:
    store = Store(redis)
    register(store, model_file("v1"), who="alice")
    both_read = threading.Barrier(2, timeout=GUARD_S)
    outcomes: dict[str, str] = {}

    reads: list[str] = []

    def first_read(who: str) -> None:
        reads.append(who)
        if reads.count(who) == 1:
            both_read.wait()  # both have read the same generation

    def deleter() -> None:
        Store(Redis.from_url(redis_url)).delete("examples/mlp", who="d",
                                                check=lambda s: first_read("d"))
        outcomes["delete"] = "done"

    def updater() -> None:
        def change(before: ContractSnapshot | None) -> ContractSnapshot:
            first_read("u")
            if before is None:
                raise NotFoundError("examples/mlp")
            return before.with_variant(replace(before.variants["v1"], reason="u"))

        try:
            Store(Redis.from_url(redis_url)).update("examples/mlp", change, who="u", what="w")
            outcomes["update"] = "done"
        except NotFoundError:
            outcomes["update"] = "gone"

    together(deleter, updater)
    # The delete always ends it; an update that lost the race finds the contract gone.
    assert outcomes["delete"] == "done" and store.contracts() == []
    whats = [e.what for e in store.events("examples/mlp")]
    assert whats[-1] == "deleted by d"
    assert (outcomes["update"], whats[-2]) in {("done", "w"), ("gone", "deploy v1")}
