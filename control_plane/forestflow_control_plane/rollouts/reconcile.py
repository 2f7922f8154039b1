"""The periodic reconcile: every interval, one worker of the control plane walks every
contract through `Rollouts.reconcile`, so time-based policies (ttl expiry, a rollout step
whose job was lost) happen on time and what drifted on the platform is put back.

A lease in Redis with the interval as its term makes one worker do it per interval, however
many run: renewed while the pass runs, left to lapse one interval after it ends. A worker
that dies holding it only delays the next pass by one interval; a pass whose lease lapsed
(a worker stalled past its term: another may have taken it) stops before its next contract.
"""

from __future__ import annotations

import logging
import threading

from redis import Redis
from redis.exceptions import RedisError

from forestflow_control_plane import names
from forestflow_control_plane.rollouts.engine import Rollouts
from forestflow_control_plane.state.leases import LeaseHeldError, held
from forestflow_control_plane.state.store import NotFoundError, Store

log = logging.getLogger("forestflow.reconcile")


def reconcile_all(
    rollouts: Rollouts, contracts: list[str], lost: threading.Event | None = None
) -> dict[str, list[str]]:
    """Reconcile each contract on its own: one that fails is logged, not the end of the pass.
    Then remove what is left on the platform of contracts no longer held. Once `lost` is
    set the pass stops where it is."""
    done: dict[str, list[str]] = {}
    for contract in contracts:
        if lost is not None and lost.is_set():
            log.warning("reconcile pass stopped before %s: its lease lapsed", contract)
            return done
        try:
            actions = rollouts.reconcile(contract)
        except NotFoundError:
            continue
        except Exception:
            log.exception("reconcile of %s failed", contract)
            continue
        if actions:
            log.info("reconcile %s: %s", contract, "; ".join(actions))
            done[contract] = actions
    try:
        orphans = rollouts.remove_orphans()
    except Exception:
        log.exception("removing the objects of deleted contracts failed")
        return done
    for contract in orphans:
        log.info("reconcile %s: removed the objects of a deleted contract", contract)
        done[contract] = ["removed the objects of a deleted contract"]
    return done


def reconcile_forever(
    redis: Redis, rollouts: Rollouts, interval: float, stop: threading.Event
) -> None:
    """Run a pass every `interval` seconds when this worker gets the pass's lease."""
    lease = redis.lock(names.RECONCILE_LOCK, timeout=interval, blocking=False, thread_local=False)
    while not stop.wait(interval):
        try:
            with held(lease, release=False) as lost:
                reconcile_all(rollouts, Store(redis).contracts(), lost)
        except LeaseHeldError:
            continue
        except RedisError as exc:
            log.warning("reconcile skipped: %s", exc)


def start_reconciler(redis: Redis, rollouts: Rollouts, interval: float) -> threading.Event:
    """Start the loop in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=reconcile_forever, args=(redis, rollouts, interval, stop),
        name="forestflow-reconcile", daemon=True,
    )
    thread.start()
    return stop
