"""The payload log: the sampled request/response events every runtime appends to one Redis
stream (`forestflow_runtime.payloads`), read back for one contract.

The stream is shared by all contracts and capped, so a read scans a bounded number of
entries. Each answer carries a `cursor`, the newest entry it scanned: passed back as
`after`, it returns only what came since, which is how `ffctl logs --follow` tails it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from pydantic import BaseModel, Field
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.state.text import text

SCAN_CHUNK = 500
MAX_SCAN = 20_000
START = "0-0"


class PayloadTensor(BaseModel):
    shape: list[int]
    data: list[Any] = Field(description="row-major, flattened")


class PayloadEvent(BaseModel):
    id: str = Field(description="the stream entry's id")
    variant: str
    request_id: str
    inputs: dict[str, PayloadTensor]
    outputs: dict[str, PayloadTensor]
    latency_ms: float
    time: float = Field(description="when the request finished, epoch seconds")


class Payloads(BaseModel):
    """A page of the contract's payload events, oldest first."""

    contract: str
    events: list[PayloadEvent]
    cursor: str = Field(description="pass as `after` to read the events that came since")


def read_payloads(
    redis: Redis,
    contract: str,
    count: int,
    variant: str | None = None,
    after: str | None = None,
    stream: str = names.PAYLOAD_STREAM,
) -> Payloads:
    """The last `count` events of `contract` (of one `variant` if given), or, with `after`,
    up to `count` events newer than that entry id."""
    if after is None:
        newest = redis.xrevrange(stream, count=1) or []
        cursor = text(newest[0][0]) if newest else START
        entries = _entries(redis, stream, cursor, forward=False) if newest else iter(())
    else:
        cursor = after
        entries = _entries(redis, stream, f"({after}", forward=True)
    events: list[PayloadEvent] = []
    for entry_id, fields in entries:
        if after is not None:
            cursor = entry_id
        event = _event(entry_id, fields, contract, variant)
        if event is not None:
            events.append(event)
            if len(events) == count:
                break
    if after is None:
        events.reverse()
    return Payloads(contract=contract, events=events, cursor=cursor)


def _entries(
    redis: Redis, stream: str, bound: str, forward: bool
) -> Iterator[tuple[str, dict[Any, Any]]]:
    """Stream entries from `bound` on, newest first unless `forward`, at most MAX_SCAN."""
    for _ in range(MAX_SCAN // SCAN_CHUNK):
        if forward:
            chunk = redis.xrange(stream, min=bound, max="+", count=SCAN_CHUNK) or []
        else:
            chunk = redis.xrevrange(stream, max=bound, min="-", count=SCAN_CHUNK) or []
        if not chunk:
            return
        for entry_id, fields in chunk:
            yield text(entry_id), fields or {}
        bound = f"({text(chunk[-1][0])}"


def _event(
    entry_id: str, raw: dict[Any, Any], contract: str, variant: str | None
) -> PayloadEvent | None:
    """The entry as an event if it is one of `contract` (and `variant`); an entry that is
    not a well-formed payload event is skipped, never an error."""
    fields = {text(k): v for k, v in raw.items()}
    if text(fields.get("contract", b"")) != contract:
        return None
    if variant is not None and text(fields.get("variant", b"")) != variant:
        return None
    try:
        return PayloadEvent(
            id=entry_id,
            variant=text(fields["variant"]),
            request_id=text(fields.get("request_id", b"")),
            inputs=orjson.loads(fields["inputs"]),
            outputs=orjson.loads(fields["outputs"]),
            latency_ms=float(fields["latency_ms"]),
            time=float(fields["time"]),
        )
    except (KeyError, ValueError):  # pydantic's and orjson's errors are ValueErrors
        return None
