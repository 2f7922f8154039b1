"""Leases in Redis: a lock that lapses on its own when its holder stops renewing it, renewed
from a thread while the holder works, so a holder that dies frees it within one term and a
holder that lost it finds out before its next move."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from redis.exceptions import LockError, RedisError
from redis.lock import Lock

RENEWALS_PER_TERM = 5


class LeaseHeldError(RuntimeError):
    """Another process holds the lease."""


@contextlib.contextmanager
def held(lease: Lock, release: bool = True) -> Iterator[threading.Event]:
    """Hold `lease` (its timeout is its term; made with thread_local=False, as it is
    renewed from another thread) while the block runs, renewed five times a term; the
    event is set once a renewal failed: the lease lapsed and may be another's. Without
    `release` it is left to lapse one term after the block, as a pass that should run once
    per term across processes wants."""
    if not lease.acquire(blocking=False):
        raise LeaseHeldError(f"{lease.name!r} is held")
    assert lease.timeout is not None, "a lease has a term"
    every = lease.timeout / RENEWALS_PER_TERM
    lost, done = threading.Event(), threading.Event()

    def renew() -> None:
        while not done.wait(every):
            try:
                lease.reacquire()
            except (LockError, RedisError):
                lost.set()
                return

    renewer = threading.Thread(target=renew, name=f"lease {lease.name!r}", daemon=True)
    renewer.start()
    try:
        yield lost
    finally:
        done.set()
        renewer.join()
        if release:
            with contextlib.suppress(LockError, RedisError):
                lease.release()
