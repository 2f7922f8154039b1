"""The worker's scheduler thread moves rollout steps that are due to their queue, says which
process holds the queue's lock, and carries on after its Redis was killed and came back (RQ's
own scheduler process exits on it)."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, SCHEDULER_LOCKING_KEY_TEMPLATE

from forestflow_control_plane.platforms.local.redis_server import (
    redis_command,
    start_redis,
    stop_redis,
    wait_for_redis,
)
from forestflow_control_plane.rollouts.scheduler import start_scheduler
from tests.support import eventually

QUEUE = "scheduled"


def due(queue: Queue) -> Job:
    return queue.enqueue_at(datetime.now(UTC) - timedelta(seconds=1), "builtins.print", "step")


def test_a_due_job_is_queued_by_the_thread_holding_the_lock(redis: Redis) -> None:
    queue = Queue(QUEUE, connection=redis)
    job = due(queue)
    stop = start_scheduler(redis, [QUEUE])
    try:
        eventually(lambda: job.id in queue.job_ids, 10.0, "the due job in its queue")
    finally:
        stop.set()
    holder = redis.get(SCHEDULER_LOCKING_KEY_TEMPLATE % QUEUE)
    assert holder is not None
    assert int(redis.hget(SCHEDULER_KEY_TEMPLATE % holder.decode(), "pid") or 0) == os.getpid()


def test_the_thread_schedules_again_once_a_killed_redis_is_back(tmp_path: Path) -> None:
    process, url = start_redis(tmp_path / "data", tmp_path / "redis.log")
    redis = Redis.from_url(url, socket_timeout=2)
    stop = start_scheduler(redis, [QUEUE])
    try:
        queue = Queue(QUEUE, connection=redis)
        first = due(queue)
        eventually(lambda: first.id in queue.job_ids, 10.0, "the first due job queued")
        process.send_signal(signal.SIGKILL)
        process.wait()
        port = urlparse(url).port or 0
        with (tmp_path / "redis.log").open("ab") as log:  # the same port, as `ffctl up` does
            process = subprocess.Popen(
                redis_command(port, tmp_path / "data"), stdout=log, stderr=log
            )
        wait_for_redis(url, lambda: process.poll() is None)
        second = due(queue)
        eventually(lambda: second.id in queue.job_ids, 10.0, "a due job queued after the kill")
    finally:
        stop.set()
        stop_redis(process)
