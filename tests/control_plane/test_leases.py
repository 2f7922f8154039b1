"""Leases in real Redis: renewed while held, refused to a second holder, noticed when lost;
and a reconcile pass that lost its lease stops before its next contract."""

from __future__ import annotations

import threading
import time

import pytest
from redis import Redis
from redis.lock import Lock

from forestflow_control_plane.rollouts.reconcile import reconcile_all
from forestflow_control_plane.state.leases import LeaseHeldError, held
from tests.support import eventually

TERM_S = 0.3


def lease(redis: Redis, name: str = "ff:test:lease") -> Lock:
    return redis.lock(name, timeout=TERM_S, blocking=False, thread_local=False)


def test_a_held_lease_outlives_its_term_is_refused_to_another_and_freed_after(
    redis: Redis,
) -> None:
    started = time.monotonic()
    with held(lease(redis)) as lost:
        last, rises = [redis.pttl("ff:test:lease")], [0]

        def renewed_thrice() -> bool:
            ttl = redis.pttl("ff:test:lease")
            rises[0] += ttl > last[0]
            last[0] = ttl
            return rises[0] >= 3 and time.monotonic() - started > TERM_S

        eventually(renewed_thrice, 10.0, "three renewals past one term")
        with pytest.raises(LeaseHeldError, match="ff:test:lease"), held(lease(redis)):
            pass
        assert not lost.is_set()
    assert redis.exists("ff:test:lease") == 0
    with held(lease(redis)):
        pass


def test_a_lease_taken_by_another_is_noticed_and_left_to_it(redis: Redis) -> None:
    with held(lease(redis)) as lost:
        redis.set("ff:test:lease", "another holder", px=10_000)
        assert lost.wait(5.0)
    assert redis.get("ff:test:lease") == b"another holder"


def test_without_release_a_lease_lapses_one_term_after_the_block(redis: Redis) -> None:
    with held(lease(redis), release=False):
        pass
    assert 0 < redis.pttl("ff:test:lease") <= TERM_S * 1000
    eventually(lambda: redis.exists("ff:test:lease") == 0, 5.0, "the lease to lapse")


class Recorder:
    """Rollouts as the reconcile pass sees them; reconciling `stall` loses the lease."""

    def __init__(self, stall: str, lost: threading.Event) -> None:
        self.stall, self.lost = stall, lost
        self.reconciled: list[str] = []
        self.orphans_removed = False

    def reconcile(self, contract: str) -> list[str]:
        self.reconciled.append(contract)
        if contract == self.stall:
            self.lost.set()  # stalled past its term meanwhile
        return [f"reconciled {contract}"]

    def remove_orphans(self) -> list[str]:
        self.orphans_removed = True
        return []


def test_a_reconcile_pass_that_lost_its_lease_stops_before_its_next_contract() -> None:
    lost = threading.Event()
    rollouts = Recorder("a/one", lost)
    done = reconcile_all(rollouts, ["a/one", "b/two", "c/three"], lost)  # type: ignore[arg-type]
    assert done == {"a/one": ["reconciled a/one"]}
    assert rollouts.reconciled == ["a/one"]
    assert not rollouts.orphans_removed
