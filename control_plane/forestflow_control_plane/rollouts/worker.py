"""The RQ worker process of the control plane: rollout jobs, their scheduled steps, and the
periodic reconcile.

Jobs run in the worker process itself (RQ's SimpleWorker), with the parts the composition
root made once: no work horse is forked per job, so no fork happens after the reconcile
thread started, and a job does not build a new platform client.

RQ's scheduler holds a lock per queue for 61 s; a worker killed with SIGKILL keeps it that
long and its scheduled rollout steps wait. At start, a lock whose holder was a process on
this host that no longer exists is released, so a restarted worker resumes at once. A holder
with this very process's PID is a predecessor too: a container restarted in its pod has the
same host name and PID 1 again, and a worker just starting holds no lock yet.
"""

from __future__ import annotations

import os
import socket
from typing import Protocol

import psutil
from redis import Redis
from rq import Queue, SimpleWorker
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE

from forestflow_control_plane import names
from forestflow_control_plane.rollouts import jobs
from forestflow_control_plane.rollouts.reconcile import start_reconciler
from forestflow_control_plane.state.text import text


def release_stale_scheduler_locks(redis: Redis, queue_names: list[str]) -> list[str]:
    """Delete scheduler locks held by dead processes of this host; return their queues."""
    released = []
    for queue in queue_names:
        lock = SCHEDULER_LOCKING_KEY_TEMPLATE % queue
        holder = redis.get(lock)
        if holder is None:
            continue
        name = text(holder)
        info = {
            text(k): text(v) for k, v in redis.hgetall(SCHEDULER_KEY_TEMPLATE % name).items()
        }
        host = info.get("hostname", "")
        pid = int(info.get("pid") or 0)
        here = host == socket.gethostname()
        dead = not info or (here and (pid == os.getpid() or not _alive(pid)))
        if dead and redis.eval(_DELETE_IF_HOLDER, 1, lock, holder):
            released.append(queue)
    return released


class WorkerParts(jobs.JobParts, Protocol):
    @property
    def redis(self) -> Redis: ...

    @property
    def queue(self) -> Queue: ...


def run_worker(parts: WorkerParts, reconcile_seconds: float) -> None:
    """Work rollout jobs and their scheduled steps, and take part in the periodic reconcile."""
    release_stale_scheduler_locks(parts.redis, [names.ROLLOUT_QUEUE])
    jobs.bind(parts)
    stop = start_reconciler(parts.redis, parts.rollouts(), reconcile_seconds)
    try:
        SimpleWorker([parts.queue], connection=parts.redis).work(with_scheduler=True)
    finally:
        stop.set()


def _alive(pid: int) -> bool:
    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


_DELETE_IF_HOLDER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
