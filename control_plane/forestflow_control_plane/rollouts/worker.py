"""The RQ worker process of the control plane: rollout jobs, their scheduled steps, and the
periodic reconcile.

Jobs run in the worker process itself (RQ's SimpleWorker), with the parts the composition
root made once: no work horse is forked per job, and RQ's scheduler runs as a thread
(scheduler.py), so the worker forks nothing once its threads started, and a job does not
build a new platform client.

RQ's scheduler holds a lock per queue for 61 s; a worker killed with SIGKILL keeps it that
long and its scheduled rollout steps wait. At start, a lock whose holder was a process on
this host that no longer exists is released, and the jobs such a worker had started are
queued again, so a restarted worker resumes at once. A holder with this very process's PID
is a predecessor too: a container restarted in its pod has the same host name and PID 1
again, and a worker just starting holds no lock yet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Collection
from typing import Any, Protocol

import psutil
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, Worker
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE

from forestflow_control_plane import names
from forestflow_control_plane.rollouts import jobs
from forestflow_control_plane.rollouts.reconcile import start_reconciler
from forestflow_control_plane.rollouts.scheduler import start_scheduler
from forestflow_control_plane.state.text import text

log = logging.getLogger("forestflow.worker")
RESTART_S = 1.0


def release_stale_scheduler_locks(redis: Redis, queue_names: list[str]) -> list[str]:
    """Delete scheduler locks held by dead processes of this host; return their queues."""
    released = []
    for queue in queue_names:
        lock = SCHEDULER_LOCKING_KEY_TEMPLATE % queue
        holder = redis.get(lock)
        if holder is None:
            continue
        record = SCHEDULER_KEY_TEMPLATE % text(holder)
        if _dead_here(redis, record) and redis.eval(_DELETE_IF_HOLDER, 1, lock, holder):
            released.append(queue)
    return released


def requeue_jobs_of_dead_workers(
    redis: Redis, queue: Queue, gone: Collection[str] = ()
) -> list[str]:
    """Queue again the jobs a dead worker of this host had started, or one named in `gone`
    (this process's, whose loop ended on an error); return their ids. RQ would call them
    abandoned only once their timeout passed, minutes on: an in-place swap whose worker
    died before it wrote its rollout record would be lost without a trace. Every rollout
    job may run twice: steps carry their token, and a swap job does not begin the swap it
    already began (in_place.InPlace.run)."""
    registry = StartedJobRegistry(queue=queue)
    requeued = []
    for job_id in registry.get_job_ids(cleanup=False):
        job = queue.fetch_job(job_id)
        if job is None or job.get_status() != JobStatus.STARTED or not job.worker_name:
            continue
        record = Worker.redis_worker_namespace_prefix + job.worker_name
        if job.worker_name not in gone and not _dead_here(redis, record):
            continue
        queue.enqueue_job(job)  # first: a crash in between runs it twice, not never
        with redis.pipeline() as pipe:
            registry.remove_executions(job, pipeline=pipe)
            pipe.execute()
        requeued.append(job.id)
    return requeued


class WorkerParts(jobs.JobParts, Protocol):
    @property
    def redis(self) -> Redis: ...

    @property
    def queue(self) -> Queue: ...


def run_worker(parts: WorkerParts, reconcile_seconds: float) -> None:
    """Work rollout jobs and their scheduled steps, and take part in the periodic reconcile,
    until asked to stop: a Redis that went away is waited for."""
    release_stale_scheduler_locks(parts.redis, [names.ROLLOUT_QUEUE])
    jobs.bind(parts)
    stops = [
        start_scheduler(parts.redis, [names.ROLLOUT_QUEUE]),
        start_reconciler(parts.redis, parts.rollouts(), reconcile_seconds),
    ]
    gone: list[str] = []
    try:
        while True:
            with contextlib.suppress(RedisError):
                requeue_jobs_of_dead_workers(parts.redis, parts.queue, gone)
            worker = _Worker([parts.queue], connection=parts.redis)
            with contextlib.suppress(RedisError):
                worker.work()
            if worker.stopping:
                return
            gone.append(worker.name)
            log.warning("the worker stopped on an error; working again in %g s", RESTART_S)
            time.sleep(RESTART_S)
    finally:
        for stop in stops:
            stop.set()


class _Worker(SimpleWorker):
    """RQ's worker, saying whether it stopped because it was asked to: RQ's own loop also
    ends, returning the same, on an error it did not expect (Redis lost while a job's
    outcome was written), and the process should not end with it."""

    stopping = False

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        super().request_stop(signum, frame)


def _dead_here(redis: Redis, record: str) -> bool:
    """The process an RQ record (a scheduler's, a worker's) names is gone: its record
    expired, or it ran on this host and no longer does (or had this process's PID: a
    container restarted in its pod)."""
    info = {text(k): text(v) for k, v in redis.hgetall(record).items()}
    if not info:
        return True
    pid = int(info.get("pid") or 0)
    here = info.get("hostname", "") == socket.gethostname()
    return here and (pid == os.getpid() or not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


_DELETE_IF_HOLDER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
