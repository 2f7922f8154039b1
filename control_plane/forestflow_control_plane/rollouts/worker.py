"""The RQ worker process of the control plane: rollout jobs, their scheduled steps, and the
periodic reconcile.

RQ's scheduler holds a lock per queue for 61 s; a worker killed with SIGKILL keeps it that
long and its scheduled rollout steps wait. At start, a lock whose holder was a process on
this host that no longer exists is released, so a restarted worker resumes at once. A holder
with this very process's PID is a predecessor too: a container restarted in its pod has the
same host name and PID 1 again, and a worker just starting holds no lock yet.
"""

from __future__ import annotations

import os
import socket

import psutil
from redis import Redis
from rq import Queue, Worker
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE

from forestflow_control_plane import names
from forestflow_control_plane.rollouts import engine as rollouts
from forestflow_control_plane.rollouts.reconcile import start_reconciler
from forestflow_control_plane.settings import Settings


def release_stale_scheduler_locks(redis: Redis, queue_names: list[str]) -> list[str]:
    """Delete scheduler locks held by dead processes of this host; return their queues."""
    released = []
    for queue in queue_names:
        lock = SCHEDULER_LOCKING_KEY_TEMPLATE % queue
        holder = redis.get(lock)
        if holder is None:
            continue
        name = _text(holder)
        info = {
            _text(k): _text(v) for k, v in redis.hgetall(SCHEDULER_KEY_TEMPLATE % name).items()
        }
        host = info.get("hostname", "")
        pid = int(info.get("pid") or 0)
        here = host == socket.gethostname()
        dead = not info or (here and (pid == os.getpid() or not _alive(pid)))
        if dead and redis.eval(_DELETE_IF_HOLDER, 1, lock, holder):
            released.append(queue)
    return released


def run_worker(settings: Settings) -> None:
    """Work rollout jobs and their scheduled steps, and take part in the periodic reconcile."""
    redis = Redis.from_url(settings.redis_url)
    release_stale_scheduler_locks(redis, [names.ROLLOUT_QUEUE])
    stop = start_reconciler(
        Redis.from_url(settings.redis_url), rollouts.build(settings, redis),
        settings.reconcile_seconds,
    )
    try:
        queue = Queue(names.ROLLOUT_QUEUE, connection=redis)
        Worker([queue], connection=redis).work(with_scheduler=True)
    finally:
        stop.set()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _alive(pid: int) -> bool:
    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


_DELETE_IF_HOLDER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
