"""RQ's scheduler, run as a thread of the worker rather than the process RQ forks for it:
the worker then forks nothing after its threads start, and a scheduler that lost Redis
carries on once Redis is back (RQ's own process exits, and the worker starts another only
at its next maintenance, minutes later). Scheduled rollout steps move to their queue within
a second of their time, from whichever worker holds the queue's scheduler lock."""

from __future__ import annotations

import logging
import threading

from redis import Redis
from redis.exceptions import RedisError
from rq.scheduler import RQScheduler

log = logging.getLogger("forestflow.scheduler")
INTERVAL_S = 1  # an int: RQ passes it on to Redis, in the locks' expiry


def schedule_forever(scheduler: RQScheduler, stop: threading.Event) -> None:
    """Every interval: take or keep the queues' locks, say this process holds them (its PID,
    which a successor checks to release a dead holder's lock), move due jobs to their
    queue."""
    while not stop.wait(INTERVAL_S):
        try:
            if scheduler.acquire_locks():
                scheduler.register_birth()
                scheduler.enqueue_scheduled_jobs()
        except RedisError as exc:
            log.warning("scheduling skipped: %s", exc)


def start_scheduler(redis: Redis, queue_names: list[str]) -> threading.Event:
    """Start the loop in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    scheduler = RQScheduler(queue_names, connection=redis, interval=INTERVAL_S)
    thread = threading.Thread(
        target=schedule_forever, args=(scheduler, stop), name="forestflow-scheduler", daemon=True
    )
    thread.start()
    return stop
