"""Rollouts on real RQ workers: a canary walks its steps through RQ's scheduler, a worker
SIGKILLed mid-rollout leaves a consistent split that a new worker carries on, and the job it
was running is queued again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from forestflow_control_plane import names
from forestflow_control_plane.rollouts.deploys import register
from forestflow_control_plane.rollouts.jobs import start_rollout
from forestflow_control_plane.rollouts.worker import requeue_jobs_of_dead_workers
from forestflow_control_plane.state.store import Store
from tests.support import eventually

from .test_rollouts import C, variant


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    workers: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = {
            **os.environ, "REDIS_URL": redis_url, "FF_HOME": str(tmp_path),
            "FF_RECONCILE_SECONDS": "0.2",
        }
        log = (tmp_path / f"worker-{len(workers)}.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "forestflow_control_plane", "worker"],
            env=env, stdout=log, stderr=log, start_new_session=True,
        )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        kill_group(worker)


def kill_group(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker with its scheduler and work horse, as a crash would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


def test_killed_worker_mid_canary_resumes_on_a_new_worker(
    redis: Redis, start_worker: Callable[[], subprocess.Popen[bytes]]
) -> None:
    store, queue = Store(redis), Queue(names.ROLLOUT_QUEUE, connection=redis)
    register(store, variant("v1"), who="t")
    canary = {"policy": "canary", "steps": [50, 100], "hold_seconds": 1}
    register(store, variant("v2", canary, on_replacement=True), who="t")
    queue.enqueue(start_rollout, C, "v1")
    queue.enqueue(start_rollout, C, "v2")
    worker = start_worker()
    eventually(
        lambda: store.get(C).contract.traffic == {"v1": 50, "v2": 50}, what="canary step 1"
    )
    kill_group(worker)
    traffic = store.get(C).contract.traffic
    assert sum(traffic.values()) == 100 and min(traffic.values()) >= 0, traffic

    start_worker()

    def succeeded() -> bool:
        rollout = store.get(C).contract.rollout
        return rollout is not None and rollout.status == "succeeded"

    eventually(succeeded, timeout=60, what="the new worker to finish the canary")
    snapshot = store.get(C)
    assert snapshot.contract.traffic == {"v2": 100}
    assert snapshot.variants["v1"].state.value == "expired"
    events = [e.what for e in store.events(C) if e.what.startswith("rollout v2")]
    steps = [what.split(":")[1].strip() for what in events]
    assert steps[0] == "step 1" and steps[-1].startswith("succeeded"), steps


def test_the_worker_reconciles_drift_on_the_platform(
    redis: Redis, start_worker: Callable[[], subprocess.Popen[bytes]]
) -> None:
    store, queue = Store(redis), Queue(names.ROLLOUT_QUEUE, connection=redis)
    register(store, variant("v1"), who="t")
    queue.enqueue(start_rollout, C, "v1")
    start_worker()
    route = names.object_key("examples", "mlp")
    eventually(lambda: redis.hexists(names.LOCAL_ROUTES, route), what="the Route applied")
    wanted = redis.hget(names.LOCAL_ROUTES, route)
    redis.hdel(names.LOCAL_ROUTES, route)  # someone deletes the contract's Route
    eventually(
        lambda: redis.hget(names.LOCAL_ROUTES, route) == wanted, what="the reconcile to restore it"
    )


def test_a_job_whose_worker_died_is_queued_again_by_the_next_worker(
    redis: Redis, start_worker: Callable[[], subprocess.Popen[bytes]]
) -> None:
    """RQ would call the job abandoned only once its timeout passed: minutes of a swap that
    never began."""
    queue = Queue(names.ROLLOUT_QUEUE, connection=redis)
    job = queue.enqueue("time.sleep", 30, job_timeout=600)
    first = start_worker()
    eventually(lambda: job.get_status() == JobStatus.STARTED, what="the job to start")
    assert requeue_jobs_of_dead_workers(redis, queue) == []  # its worker is alive
    kill_group(first)
    assert requeue_jobs_of_dead_workers(redis, queue) == [job.id]
    assert job.get_status() == JobStatus.QUEUED and job.id in queue.job_ids
    assert StartedJobRegistry(queue=queue).get_job_ids(cleanup=False) == []
    start_worker()  # it does the same at its start, and runs the job again
    eventually(lambda: job.get_status() == JobStatus.STARTED, what="the job to run again")
