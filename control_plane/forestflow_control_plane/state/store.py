"""Contracts and variants in Redis, with compare-and-set writes and an audit stream.

One write is one MULTI/EXEC under WATCH: of two concurrent writers one wins and the
other gets `ConflictError`; the event describing the change commits with it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
from redis import Redis
from redis.exceptions import WatchError
from redis.lock import Lock

from forestflow_control_plane import names
from forestflow_control_plane.state.errors import ConflictError, NotFoundError
from forestflow_control_plane.state.records import (
    ContractRecord,
    ContractSnapshot,
    Event,
    VariantRecord,
)

__all__ = ["Change", "ConflictError", "NotFoundError", "Store"]

EVENTS_MAX = 10_000
CAS_ATTEMPTS = 5
CAS_BACKOFF_S = 0.01

Change = Callable[[ContractSnapshot | None], ContractSnapshot]


class Store:
    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock

    def swap_lease(self, contract: str, ttl: float) -> Lock:
        """The contract's in-place swap lease, unheld: it lapses `ttl` seconds after its
        holder last renewed it, so a holder that died frees it on its own."""
        return self._redis.lock(
            names.swap_lease_key(contract), timeout=ttl, blocking=False, thread_local=False
        )

    def contracts(self) -> list[str]:
        return sorted(m.decode() for m in self._redis.smembers(names.CONTRACTS_INDEX))  # type: ignore[union-attr]

    def get(self, contract: str) -> ContractSnapshot:
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(names.contract_key(contract))
        pipe.hgetall(names.variants_key(contract))
        snapshot = _decode(*pipe.execute())
        if snapshot is None:
            raise NotFoundError(f"contract {contract!r} not found")
        return snapshot

    def update(
        self,
        contract: str,
        change: Change,
        *,
        who: str,
        what: str | Callable[[], str | None],
        expected_generation: int | None = None,
    ) -> ContractSnapshot:
        """Apply `change` to the stored snapshot as one compare-and-set transaction.
        `what` may be a callable, read after `change` ran, to describe what it did; None
        from it is bookkeeping, no transition (a step that holds), and records no event. A
        write that lost the race is tried again on what won (`change` is a function of the
        snapshot), a few times, backing off."""

        def attempt() -> ContractSnapshot:
            with self._redis.pipeline() as pipe:
                before = _watch(pipe, contract)
                current = before.contract.generation if before else 0
                _check_generation(contract, current, expected_generation)
                after = self._stamp(before, change(before))
                pipe.multi()
                self._write(pipe, before, after)
                described = what if isinstance(what, str) else what()
                if described is not None:
                    self._record(pipe, contract, who, described, before, after)
                pipe.execute()
                return after

        return _retried(contract, attempt)

    def delete(
        self,
        contract: str,
        *,
        who: str,
        check: Callable[[ContractSnapshot], None] | None = None,
        expected_generation: int | None = None,
    ) -> ContractSnapshot:
        """Remove the contract and its variants as one compare-and-set transaction and
        return what was removed. `check` sees the stored snapshot first and raises to refuse.
        The events stream stays, with a last event saying who deleted it: the audit log
        outlives the contract."""
        keys = (names.contract_key(contract), names.variants_key(contract))

        def attempt() -> ContractSnapshot:
            with self._redis.pipeline() as pipe:
                before = _watch(pipe, contract)
                if before is None:
                    raise NotFoundError(f"contract {contract!r} not found")
                _check_generation(contract, before.contract.generation, expected_generation)
                if check is not None:
                    check(before)
                pipe.multi()
                pipe.delete(*keys)
                pipe.srem(names.CONTRACTS_INDEX, contract)
                self._record(pipe, contract, who, f"deleted by {who}", before, None)
                pipe.execute()
                return before

        return _retried(contract, attempt)

    def events(self, contract: str, count: int = 100) -> list[Event]:
        rows = self._redis.xrevrange(names.events_key(contract), count=count)
        return [_event(entry_id, fields) for entry_id, fields in reversed(rows)]  # type: ignore[arg-type]

    def _record(
        self,
        pipe: Any,
        contract: str,
        who: str,
        what: str,
        before: ContractSnapshot | None,
        after: ContractSnapshot | None,
    ) -> None:
        """Queue the event describing one transition, to commit with it."""
        pipe.xadd(
            names.events_key(contract),
            {
                "who": who,
                "what": what,
                "when": repr(self._clock()),
                "before": orjson.dumps(_summary(before)),
                "after": orjson.dumps(_summary(after)),
            },
            maxlen=EVENTS_MAX,
            approximate=True,
        )

    def _stamp(self, before: ContractSnapshot | None, after: ContractSnapshot) -> ContractSnapshot:
        """Bump the generation and times of every record the change touched."""
        now = self._clock()
        old_contract = before.contract if before else None
        contract = after.contract
        if contract != old_contract:
            contract = replace(
                contract,
                generation=(old_contract.generation if old_contract else 0) + 1,
                created_at=old_contract.created_at if old_contract else now,
                updated_at=now,
            )
        variants = {}
        for version, variant in after.variants.items():
            old = before.variants.get(version) if before else None
            if variant != old:
                variant = replace(
                    variant,
                    generation=(old.generation if old else 0) + 1,
                    created_at=old.created_at if old else now,
                    updated_at=now,
                )
            variants[version] = variant
        return ContractSnapshot(contract, variants)

    def _write(self, pipe: Any, before: ContractSnapshot | None, after: ContractSnapshot) -> None:
        name = after.contract.name
        if before is None or after.contract != before.contract:
            pipe.set(names.contract_key(name), orjson.dumps(after.contract.to_dict()))
            pipe.sadd(names.CONTRACTS_INDEX, name)
        for version, variant in after.variants.items():
            if before is None or before.variants.get(version) != variant:
                pipe.hset(names.variants_key(name), version, orjson.dumps(variant.to_dict()))


def _retried(contract: str, attempt: Callable[[], ContractSnapshot]) -> ContractSnapshot:
    """`attempt` again while another write wins the race, backing off with jitter; a
    ConflictError naming the contract once CAS_ATTEMPTS all lost."""
    for tried in range(CAS_ATTEMPTS):
        try:
            return attempt()
        except WatchError:
            time.sleep(CAS_BACKOFF_S * 2**tried * (1 + random.random()))
    raise ConflictError(
        f"contract {contract!r} changed concurrently {CAS_ATTEMPTS} times in a row; try again"
    )


def _check_generation(contract: str, current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise ConflictError(
            f"expected_generation: contract {contract!r} is at generation {current}, "
            f"not {expected}; read it again and retry"
        )


def _watch(pipe: Any, contract: str) -> ContractSnapshot | None:
    """WATCH the contract's keys and read it: the start of every compare-and-set."""
    pipe.watch(names.contract_key(contract), names.variants_key(contract))
    return _decode(
        pipe.get(names.contract_key(contract)), pipe.hgetall(names.variants_key(contract))
    )


def _decode(raw_contract: Any, raw_variants: dict[Any, Any]) -> ContractSnapshot | None:
    if raw_contract is None:
        return None
    variants = {
        key.decode(): VariantRecord.from_dict(orjson.loads(value))
        for key, value in raw_variants.items()
    }
    return ContractSnapshot(ContractRecord.from_dict(orjson.loads(raw_contract)), variants)


def _summary(snapshot: ContractSnapshot | None) -> dict[str, Any]:
    if snapshot is None:
        return {}
    return {
        "traffic": snapshot.contract.traffic,
        "variants": {v: r.state.value for v, r in sorted(snapshot.variants.items())},
    }


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    return Event(
        id=entry_id.decode(),
        who=fields[b"who"].decode(),
        what=fields[b"what"].decode(),
        when=float(fields[b"when"]),
        before=orjson.loads(fields[b"before"]),
        after=orjson.loads(fields[b"after"]),
    )
