"""In-place rollouts against real runtime processes: new weights go into each replica in
turn through the runtime's load API, and the first failure puts every replica back."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.platforms.local.supervisor import Supervisor
from forestflow_control_plane.rollouts.deploys import register, swap_of
from forestflow_control_plane.rollouts.engine import Action, Rollouts
from forestflow_control_plane.rollouts.in_place import LEASE_S, InPlace
from forestflow_control_plane.spec.model_file import ModelFile, validate_model_file
from forestflow_control_plane.state.store import ConflictError, Store
from tests.control_plane.memory_platform import MemoryPlatform
from tests.support import REPO, Held, eventually, example_mlp, free_port

from .test_supervisor import spec

C = "examples/mlp"
PROBE = {"input": [[0.5, -1.0, 2.0, 0.25]]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example MLP's code with two sets of weights: mlp.safetensors and new.safetensors."""
    return example_mlp(tmp_path_factory.mktemp("mlp"), mlp=0, new=1)


def model_file(weights: Path, uri: str = "mlp.safetensors", **change: Any) -> ModelFile:
    data = yaml.safe_load((REPO / "examples" / "mlp" / "model.yaml").read_text())
    located = uri if "://" in uri else str(weights / uri)
    data["variant"]["model"].update(uri=located, python_path=str(weights))
    data["variant"].update(change)
    data["rollout"] = {"strategy": "in_place"}
    return validate_model_file(data)


@pytest.fixture
async def replicas(weights: Path, tmp_path: Path) -> AsyncIterator[list[str]]:
    """Two real runtime replicas of v1, serving the original weights."""
    async with httpx.AsyncClient() as client:
        supervisor = Supervisor(tmp_path, client)
        await supervisor.open()
        try:
            started = await asyncio.gather(
                *(supervisor.start(spec(weights), timeout=60) for _ in range(2))
            )
            yield [r.url for r in started]
        finally:
            await asyncio.gather(*(supervisor.stop(r) for r in started))
            await supervisor.close()


def outputs(urls: list[str]) -> list[list[float]]:
    return [httpx.post(f"{u}/v1/mlp/predict", json=PROBE).json()["output"][0] for u in urls]


def serving(redis: Redis, weights: Path, urls: list[str]) -> tuple[Store, MemoryPlatform]:
    store, platform = Store(redis), MemoryPlatform()
    register(store, model_file(weights), who="t")
    Rollouts(store, platform, lambda call: None).start(C, "v1")
    platform.replicas[(C, "v1")] = urls
    return store, platform


async def swap(
    store: Store, platform: MemoryPlatform, model: ModelFile, job: str | None = None
) -> dict[str, Any]:
    wanted = swap_of(store.get(C), model)
    assert wanted is not None
    with httpx.Client() as client:
        in_place = InPlace(store, platform, platform.replica_urls, client)
        return await asyncio.to_thread(in_place.run, C, "v1", wanted, job)


async def test_new_weights_reach_every_replica_then_the_spec(
    redis: Redis, weights: Path, replicas: list[str]
) -> None:
    store, platform = serving(redis, weights, replicas)
    before = outputs(replicas)
    first = platform.objects[("Service", "examples", "ff-mlp-v1")]
    first_revision = first["spec"]["template"]["metadata"]["name"]
    new = model_file(weights, "new.safetensors")
    result = await swap(store, platform, new)
    assert result["rollout"]["progress"]["status"] == "succeeded"
    after = outputs(replicas)
    assert after[0] == after[1] and after[0] != before[0]
    variant = store.get(C).variants["v1"]
    assert variant.spec["model"]["uri"].endswith("new.safetensors")
    assert variant.spec["revision"] == 2
    assert store.get(C).contract.traffic == {"v1": 100}
    service = platform.objects[("Service", "examples", "ff-mlp-v1")]
    revision = service["spec"]["template"]["metadata"]["name"]
    assert revision != first_revision and revision.startswith("ff-mlp-v1-")
    assert service["spec"]["template"]["metadata"]["labels"]["forestflow.dev/revision"] == "2"
    container = service["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FF_MODEL_URI"].endswith("new.safetensors")  # a replica started later loads it
    route = platform.objects[("Route", "examples", "mlp")]
    assert route["spec"]["traffic"][0]["revisionName"] == revision
    assert swap_of(store.get(C), new) is None  # deploying it again is a no-op


async def test_the_first_failure_reverts_the_replicas_already_swapped(
    redis: Redis, weights: Path, replicas: list[str]
) -> None:
    store, platform = serving(redis, weights, replicas)
    before = outputs(replicas[:1])
    gone = f"http://127.0.0.1:{free_port()}"
    platform.replicas[(C, "v1")] = [replicas[0], gone]
    result = await swap(store, platform, model_file(weights, "new.safetensors"))
    progress = result["rollout"]["progress"]
    assert progress["status"] == "rolled_back"
    assert gone in progress["reason"]
    assert outputs(replicas[:1]) == before  # swapped, then put back
    variant = store.get(C).variants["v1"]
    assert variant.spec["model"]["uri"].endswith("mlp.safetensors")
    assert "revision" not in variant.spec


async def test_a_job_run_again_does_not_begin_its_swap_twice_but_a_new_deploy_does(
    redis: Redis, weights: Path, replicas: list[str]
) -> None:
    """A job its dead worker had started is queued again (rollouts/worker.py): once it has
    begun its swap, a second run leaves the rollout as the first (or the reconcile) left it.
    The user deploying the same weights again is another job: it swaps."""
    store, platform = serving(redis, weights, replicas)
    gone = f"http://127.0.0.1:{free_port()}"
    platform.replicas[(C, "v1")] = [replicas[0], gone]
    new = model_file(weights, "new.safetensors")
    first = await swap(store, platform, new, job="job-1")
    assert first["rollout"]["progress"]["status"] == "rolled_back"
    platform.replicas[(C, "v1")] = replicas  # the replica is back
    again = await swap(store, platform, new, job="job-1")
    assert again["rollout"] == first["rollout"]
    retried = await swap(store, platform, new, job="job-2")
    assert retried["rollout"]["progress"]["status"] == "succeeded"
    assert retried["rollout"]["token"] == first["rollout"]["token"] + 1


async def test_weights_that_do_not_load_leave_every_replica_as_it_was(
    redis: Redis, weights: Path, replicas: list[str]
) -> None:
    store, platform = serving(redis, weights, replicas)
    before = outputs(replicas)
    (weights / "broken.safetensors").write_bytes(b"not weights")
    result = await swap(store, platform, model_file(weights, "broken.safetensors"))
    assert result["rollout"]["progress"]["status"] == "rolled_back"
    assert "load answered" in result["rollout"]["progress"]["reason"]
    assert outputs(replicas) == before


def test_in_place_changes_only_the_artifact(redis: Redis, weights: Path) -> None:
    store = Store(redis)
    register(store, model_file(weights), who="t")
    with pytest.raises(ConflictError, match=r"variant\.batching: differs"):
        register(store, model_file(weights, batching={"max_batch_size": 4}), who="t")
    changed = model_file(weights)
    data = changed.model_dump(mode="json", by_alias=True)
    data["variant"]["model"]["class"] = "model:Other"
    with pytest.raises(ConflictError, match=r"variant\.model\.class: cannot change in place"):
        register(store, validate_model_file(data), who="t")
    register(store, model_file(weights, "new.safetensors"), who="t")
    assert store.get(C).variants["v1"].spec["model"]["uri"].endswith("mlp.safetensors")


async def test_an_in_place_swap_is_only_aborted_or_rolled_back_and_only_before_it_ends(
    redis: Redis, weights: Path, replicas: list[str]
) -> None:
    store, platform = serving(redis, weights, replicas)
    await swap(store, platform, model_file(weights, "new.safetensors"))
    rollouts = Rollouts(store, platform, lambda call: None)
    with pytest.raises(ConflictError, match="pause: the in-place swap of examples/mlp@v1 can "
                       "only be aborted or rolled back"):
        rollouts.act(C, Action.PAUSE, "alice")
    with pytest.raises(ConflictError, match=r"abort: .* is already succeeded"):
        rollouts.act(C, Action.ABORT, "alice")


async def test_with_no_replica_running_the_weights_are_tried_first(
    redis: Redis, weights: Path
) -> None:
    store, platform = serving(redis, weights, [])
    result = await swap(store, platform, model_file(weights, "new.safetensors"))
    assert result["rollout"]["progress"]["status"] == "succeeded"
    (trial,) = platform.trials
    container = trial["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FF_MODEL_URI"].endswith("new.safetensors")


@pytest.fixture
def held(weights: Path) -> Iterator[Held]:
    server = Held(weights)
    yield server
    server.close()


def index(url: str) -> dict[str, Any]:
    (entry,) = httpx.post(f"{url}/v2/repository/index").json()
    return dict(entry)


def serves(url: str) -> str:
    """The artifact a replica serves once the loads it has begun are done."""
    entry = index(url)
    return str([entry, *entry.get("loading", [])][-1]["uri"])


def status(store: Store) -> str:
    record = store.get(C).contract.rollout
    assert record is not None
    return record.status.value


KILLED_JOB = """
import sys, httpx, orjson
from redis import Redis
from forestflow_control_plane.rollouts.in_place import InPlace
from forestflow_control_plane.state.store import Store
from tests.control_plane.memory_platform import MemoryPlatform
redis_url, urls, model = sys.argv[1], sys.argv[2].split(","), orjson.loads(sys.argv[3])
with httpx.Client() as client:
    InPlace(Store(Redis.from_url(redis_url)), MemoryPlatform(), lambda c, v: urls, client).run(
        "examples/mlp", "v1", model)
"""


async def test_a_swap_whose_job_was_killed_mid_load_is_reverted_by_the_next_reconcile(
    redis: Redis, redis_url: str, weights: Path, replicas: list[str], held: Held
) -> None:
    """Issue 11's reproduction: the job SIGKILLed while a replica fetches the new weights,
    which that replica then goes on to serve. The first reconcile pass after the job's lease
    lapses marks the swap rolled back and puts the replica back."""
    store, platform = serving(redis, weights, replicas)
    before = outputs(replicas)
    wanted = swap_of(store.get(C), model_file(weights, f"{held.url}/new.safetensors"))
    assert wanted is not None
    job = subprocess.Popen(
        [sys.executable, "-c", KILLED_JOB, redis_url, ",".join(replicas), orjson.dumps(wanted)],
        cwd=REPO,
    )
    try:
        assert await asyncio.to_thread(held.asked.wait, 60)
        assert status(store) == "running"
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    held.released.set()
    await asyncio.to_thread(eventually, lambda: "loading" not in index(replicas[0]), 30.0,
                            "the killed job's load to end on its replica")
    assert serves(replicas[0]) == wanted["uri"]  # the hazard: new weights, spec says old
    with httpx.Client() as client:
        repair = InPlace(store, platform, platform.replica_urls, client).repair
        rollouts = Rollouts(store, platform, lambda call: None, repair=repair)
        started = time.monotonic()
        done = await asyncio.to_thread(_until_repaired, rollouts)
        assert time.monotonic() - started < LEASE_S + 2
        assert rollouts.reconcile(C) == []  # repaired: the next pass finds nothing to do
    assert status(store) == "rolled_back"
    assert "its job stopped before every replica had the new weights" in done[0]
    assert [serves(u) for u in replicas] == [str(weights / "mlp.safetensors")] * 2
    assert outputs(replicas) == before
    assert store.get(C).variants["v1"].spec["model"]["uri"].endswith("mlp.safetensors")


def _until_repaired(rollouts: Rollouts) -> list[str]:
    """Reconcile passes until one does something: none does while the lease is held."""
    while not (done := rollouts.reconcile(C)):
        time.sleep(0.2)
    return done


async def test_an_abort_mid_swap_stops_the_job_which_puts_back_what_it_swapped(
    redis: Redis, weights: Path, replicas: list[str], held: Held
) -> None:
    store, platform = serving(redis, weights, replicas)
    before = outputs(replicas)
    slow = model_file(weights, f"{held.url}/new.safetensors")
    running = asyncio.create_task(swap(store, platform, slow))
    assert await asyncio.to_thread(held.asked.wait, 60)
    with pytest.raises(ConflictError, match="an in-place swap of examples/mlp is running"):
        await swap(store, platform, model_file(weights, "new.safetensors"))
    Rollouts(store, platform, lambda call: None).act(C, Action.ABORT, "alice")
    assert status(store) == "aborted"
    held.released.set()
    progress = (await running)["rollout"]["progress"]
    assert (progress["status"], progress["reason"]) == ("aborted", "abort by alice")
    assert [serves(u) for u in replicas] == [str(weights / "mlp.safetensors")] * 2
    assert outputs(replicas) == before
    assert store.get(C).variants["v1"].spec["model"]["uri"].endswith("mlp.safetensors")


async def test_a_swap_that_outlasts_its_lease_term_keeps_renewing_it_and_succeeds(
    redis: Redis, weights: Path, replicas: list[str], held: Held
) -> None:
    store, platform = serving(redis, weights, replicas)
    key = names.swap_lease_key(C)
    running = asyncio.create_task(swap(store, platform, model_file(
        weights, f"{held.url}/new.safetensors")))
    assert await asyncio.to_thread(held.asked.wait, 60)
    last, rises = [redis.pttl(key)], [0]

    def renewed_twice() -> bool:
        ttl = redis.pttl(key)
        rises[0] += ttl > last[0]
        last[0] = ttl
        return rises[0] >= 2

    await asyncio.to_thread(eventually, renewed_twice, 10.0, "the swap lease renewed twice")
    held.released.set()
    progress = (await running)["rollout"]["progress"]
    assert (progress["status"], progress["reason"]) == ("succeeded", "weights swapped")
    assert [serves(u) for u in replicas] == [f"{held.url}/new.safetensors"] * 2
    assert redis.exists(key) == 0  # released at the end
