"""Issue 11's reproduction, as a user meets it: an in-place deploy whose weights come over a
slow http link, the worker SIGKILLed while the replica fetches them, then `ffctl up`, with
clients calling throughout. Within one reconcile interval the swap is rolled back and the
replica, which went on to load the new weights after the kill, serves the stored ones again.
And `ffctl abort` stops a swap midway."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from forestflow_control_plane.settings import Settings
from tests.support import Held, eventually

from .conftest import LocalPlatform, running
from .load import Tally, load, until_answered
from .test_local_in_place import with_weights
from .test_local_slice import outputs, predict
from .test_local_worker_kill import worker_pid

RECONCILE_S = Settings.reconcile_seconds


@pytest.fixture
def held(example: Path) -> Iterator[Held]:
    server = Held(example.parent)
    yield server
    server.close()


@pytest.fixture
def serving(local_platform: LocalPlatform, example: Path) -> LocalPlatform:
    """The platform up, serving the example's v1."""
    local_platform.up()
    deployed = local_platform.ffctl("deploy", str(example), "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    return local_platform


def over_http(example: Path, seed: int, held: Held) -> Path:
    """The same version, in place, with new weights that `held` serves."""
    local = with_weights(example, seed)
    spec = yaml.safe_load(local.read_text())
    spec["variant"]["model"]["uri"] = f"{held.url}/{spec['variant']['model']['uri']}"
    local.write_text(yaml.safe_dump(spec))
    return local


def settled_on(platform: LocalPlatform) -> str | None:
    """The artifact the one replica serves, once it is loading none: by its repository
    index, at the port its PID file names (`<namespace>_<service>-<port>.pid`)."""
    (pid_file,) = platform.home.glob("pids/runtimes/*.pid")
    port = pid_file.stem.rsplit("-", 1)[1]
    (entry,) = httpx.post(f"http://127.0.0.1:{port}/v2/repository/index").json()
    return None if entry.get("loading") else str(entry["uri"])


def described(platform: LocalPlatform) -> str:
    shown = platform.ffctl("describe", "examples/mlp")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return " ".join(shown.stdout.split())


async def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    await asyncio.to_thread(eventually, check, timeout, what)


async def swap_begun(platform: LocalPlatform, example: Path, held: Held, tally: Tally) -> None:
    """Clients are calling; an in-place deploy of weights over http has its replica
    fetching them, held there."""
    await until_answered(tally, 10)
    slow = over_http(example, 7, held)
    deployed = await asyncio.to_thread(platform.ffctl, "deploy", str(slow))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert await asyncio.to_thread(held.asked.wait, 60), "no replica asked for the weights"


async def kill_mid_swap(platform: LocalPlatform, example: Path, held: Held) -> None:
    before = outputs(predict(platform))
    stored = yaml.safe_load(example.read_text())["variant"]["model"]["uri"]
    async with load(platform) as tally:
        await swap_begun(platform, example, held, tally)
        assert "v1 (in_place): running" in described(platform)
        killed = worker_pid(platform)
        os.killpg(killed, signal.SIGKILL)
        await wait(lambda: not running(killed), 10.0, "the kill")
        held.released.set()  # the replica goes on: it will serve the new weights
        await wait(lambda: settled_on(platform) == f"{held.url}/mlp-7.safetensors", 60.0,
                   "the replica to serve the weights the dead job asked for")
        assert "v1 (in_place): running" in described(platform)  # stuck until a worker is back

        await asyncio.to_thread(platform.up)
        repaired_at = time.monotonic()
        await wait(lambda: "v1 (in_place): rolled_back" in described(platform), 2 * RECONCILE_S,
                   "the reconcile to finish the swap")
        assert time.monotonic() - repaired_at < RECONCILE_S + 2
        await wait(lambda: (settled_on(platform) or "").endswith(stored), 30.0,
                   "the replica to serve the stored weights again")
        await until_answered(tally, 10)
    print(tally.summary("in-place swap, worker killed mid-load, then ffctl up"))
    assert tally.failures == []
    assert outputs(predict(platform)) == before
    assert "its job stopped before every replica had the new weights" in described(platform)


def test_a_swap_whose_worker_was_killed_mid_load_is_reverted_after_ffctl_up(
    serving: LocalPlatform, example: Path, held: Held
) -> None:
    asyncio.run(kill_mid_swap(serving, example, held))


async def abort_mid_swap(platform: LocalPlatform, example: Path, held: Held) -> None:
    before = outputs(predict(platform))
    stored = yaml.safe_load(example.read_text())["variant"]["model"]["uri"]
    async with load(platform) as tally:
        await swap_begun(platform, example, held, tally)
        aborted = await asyncio.to_thread(platform.ffctl, "abort", "examples/mlp")
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        assert "v1 (in_place): aborted" in described(platform)
        held.released.set()
        # The replica loads the new weights, then the job, at its next step, puts it back.
        await wait(lambda: (settled_on(platform) or "").endswith(stored), 60.0,
                   "the job to put the replica back after its load")
        await until_answered(tally, 10)
    assert tally.failures == []
    assert outputs(predict(platform)) == before


def test_ffctl_abort_stops_a_swap_midway_and_the_job_puts_the_replica_back(
    serving: LocalPlatform, example: Path, held: Held
) -> None:
    asyncio.run(abort_mid_swap(serving, example, held))
