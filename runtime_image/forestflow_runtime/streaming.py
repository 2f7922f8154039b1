"""Inference requests from a Redis Stream, answered on another, through the HTTP batcher.

A consumer group spreads messages over replicas. A message's `inputs` field holds a request as
JSON, OIP v2 ({"inputs": [...]}) or plain ({"input": ...}), decoded by the same rules as HTTP;
it joins the same batcher queue, so stream and HTTP requests share batches and backpressure: the
consumer reads no more than the queue has room for, and holds at most _INFLIGHT_BATCHES batches
of messages, leaving the rest of the queue to HTTP. A result is XADDed and its message XACKed in
one MULTI/EXEC: a crash before it means redelivery (at-least-once, duplicates possible).

A failed message stays pending. Once idle for claim_idle_ms, any consumer (this one included)
reclaims it with XAUTOCLAIM, which counts a delivery; the delivery that fails for the
max_failures-th time moves the message to the dead-letter stream, with the error, and acks it.
Redis being away only pauses the consumer (backoff); HTTP never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from forestflow_runtime.config import StreamConfig
from forestflow_runtime.dataplane import DataPlane, OutputTensor
from forestflow_runtime.errors import InvalidRequest, ModelNotReady, QueueFull, RuntimeServingError
from forestflow_runtime.metrics import RuntimeMetrics
from forestflow_runtime.protocols.binary import BinaryReader
from forestflow_runtime.protocols.codec import decode_inputs, encode_outputs
from forestflow_runtime.validation import instances_array

log = logging.getLogger(__name__)
_INFLIGHT_BATCHES = 2
_BLOCK_MS = 1000
_BACKOFF_S = (0.1, 5.0)
_POLL_S = 0.02  # waiting for model readiness or queue room, which nothing here signals
Entry = tuple[bytes, dict[bytes, bytes] | None]


class StreamKeyError(Exception):
    """An output stream key holds another type: XADD would fail after the XACK in MULTI."""


class _Interrupted(Exception):
    """Shutdown came while a message waited for queue room: it stays pending, uncounted."""


@dataclass(frozen=True, slots=True)
class StreamMessage:
    entry_id: bytes
    fields: dict[bytes, bytes]
    read_at: float


@dataclass(frozen=True, slots=True)
class StreamResult:
    request_id: str
    outputs: list[OutputTensor]


class StreamConsumer:
    """One background task reads and reclaims; one task per message runs and answers it."""

    def __init__(self, config: StreamConfig, plane: DataPlane, metrics: RuntimeMetrics) -> None:
        self.config = config
        self.plane = plane
        self.metrics = metrics
        self.consumer = config.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._inflight: dict[bytes, asyncio.Task[None]] = {}
        self._freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._reading = False
        self._claim_cursor: bytes | str = "0-0"
        self._next_claim = 0.0
        self._claim_every_s = min(max(config.claim_idle_ms / 2000.0, 0.01), 30.0)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ff-stream")

    @property
    def stopping(self) -> bool:
        """True once close() has begun: from then on the consumer reads nothing new."""
        return self._stopping.is_set()

    async def close(self) -> None:
        """No new reads; in-flight messages finish and are answered; the rest stay pending."""
        self._stopping.set()
        if self._task is None:
            return
        if self._reading:  # a blocked XREADGROUP: whatever it delivered is reclaimed later
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        client = aioredis.Redis.from_url(
            self.config.redis_url or "",
            socket_timeout=_BLOCK_MS / 1000.0 + 5.0,
            socket_connect_timeout=1.0,
        )
        backoff, prepared = _BACKOFF_S[0], False
        try:
            while not self.plane.ready and not self._stopping.is_set():
                await self._pause(_POLL_S)
            while not self._stopping.is_set():
                try:
                    if not prepared:
                        await self._prepare(client)
                        prepared = True
                    await self._step(client)
                    backoff = _BACKOFF_S[0]
                except Exception as exc:  # Redis away, a bad key, or a bug: HTTP goes on
                    prepared = False
                    self.metrics.stream_error()
                    expected = isinstance(exc, aioredis.RedisError | OSError | StreamKeyError)
                    log.warning(
                        "stream %s: %s; retrying in %.1fs",
                        self.config.input,
                        exc,
                        backoff,
                        exc_info=not expected,
                    )
                    await self._pause(backoff)
                    backoff = min(backoff * 2, _BACKOFF_S[1])
        finally:
            if self._inflight:
                await asyncio.gather(*self._inflight.values(), return_exceptions=True)
            await self._retire(client)
            await client.aclose()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _prepare(self, client: aioredis.Redis) -> None:
        """The group (from the stream's start, so nothing sent before it is missed), and output
        keys that are streams or absent."""
        for key in (self.config.output, self.config.dead_letter):
            kind = _text(await client.type(key))
            if kind not in ("stream", "none"):
                raise StreamKeyError(f"key {key!r} is a {kind}, not a stream")
        try:
            await client.xgroup_create(self.config.input, self.config.group, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _step(self, client: aioredis.Redis) -> None:
        """Reclaim stale entries when due, else read new ones: at most as many as there is
        room for, blocking no longer than the next reclaim is due."""
        room = await self._room()
        if not room:
            return
        now = time.monotonic()
        if now >= self._next_claim:
            self._begin(client, await self._claim(client, room, now))
            return
        block_ms = max(1, min(_BLOCK_MS, int((self._next_claim - now) * 1000)))
        self._reading = True
        try:
            reply = await client.xreadgroup(
                self.config.group,
                self.consumer,
                {self.config.input: ">"},
                count=room,
                block=block_ms,
            )
        finally:
            self._reading = False
        for _, entries in cast(list[Any], reply) or ():  # RESP2: [[stream, entries]]
            self._begin(client, entries)

    async def _room(self) -> int:
        """How many messages may be read now; waits (until shutdown) while that is none."""
        batching = self.plane.config.batching
        while not self._stopping.is_set():
            own = batching.max_batch_size * _INFLIGHT_BATCHES - len(self._inflight)
            queue = batching.max_queue - self.plane.batcher.depth
            room = min(own, queue, batching.max_batch_size)
            if room > 0:
                return room
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), _POLL_S)
        return 0

    async def _claim(self, client: aioredis.Redis, count: int, now: float) -> list[Entry]:
        """Entries idle past claim_idle_ms, from any consumer of the group: dead ones, and
        messages that failed here or elsewhere. One page per call until the scan wraps."""
        reply: list[Any] = await client.xautoclaim(
            self.config.input,
            self.config.group,
            self.consumer,
            min_idle_time=self.config.claim_idle_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = cursor
        if _text(cursor) == "0-0":
            self._next_claim = now + self._claim_every_s
            await self._observe_backlog(client)
        return [entry for entry in entries if entry[0] not in self._inflight]

    async def _observe_backlog(self, client: aioredis.Redis) -> None:
        for group in await client.xinfo_groups(self.config.input):
            if group["name"] == self.config.group.encode():
                self.metrics.stream_backlog(group.get("lag"), int(group["pending"]))

    def _begin(self, client: aioredis.Redis, entries: list[Entry]) -> None:
        now = time.perf_counter()
        loop = asyncio.get_running_loop()
        for entry_id, fields in entries:
            if entry_id in self._inflight:
                continue
            self.metrics.stream_message("consumed")
            message = StreamMessage(entry_id, fields or {}, now)
            task = loop.create_task(self._process(client, message))
            self._inflight[entry_id] = task
            task.add_done_callback(functools.partial(self._finished, entry_id))

    def _finished(self, entry_id: bytes, task: asyncio.Task[None]) -> None:
        del self._inflight[entry_id]
        self._freed.set()

    async def _process(self, client: aioredis.Redis, message: StreamMessage) -> None:
        try:
            try:
                result = await self._infer(message)
            except _Interrupted:
                return
            except RuntimeServingError as exc:
                await self._failed(client, message, str(exc))
                return
            except Exception as exc:  # a bug must not kill the consumer; the message retries
                log.exception("stream message %s failed", message.entry_id.decode())
                await self._failed(client, message, f"internal error: {exc!r}")
                return
            await self._answer(client, message, result)
        except (aioredis.RedisError, OSError) as exc:
            self.metrics.stream_error()
            log.warning("stream message %s left pending: %s", message.entry_id.decode(), exc)

    async def _infer(self, message: StreamMessage) -> StreamResult:
        inputs, request_id = self._decode(message)
        while True:
            try:
                inference = await self.plane.infer(
                    inputs, self.plane.default_timeout_s, request_id
                )
                return StreamResult(request_id, inference.outputs)
            except (QueueFull, ModelNotReady):  # HTTP took the room meanwhile: wait, uncounted
                if self._stopping.is_set():
                    raise _Interrupted from None
                await asyncio.sleep(_POLL_S)

    def _decode(self, message: StreamMessage) -> tuple[tuple[np.ndarray, ...], str]:
        """The request's arrays and id: the message's `id`, the document's, or the entry id."""
        raw = message.fields.get(b"inputs")
        if raw is None:
            raise InvalidRequest("inputs: missing; a message carries its request as JSON there")
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"inputs: malformed JSON: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidRequest(f"inputs: expected a JSON object, got {type(document).__name__}")
        if "inputs" in document:
            arrays = decode_inputs(self.plane, document, BinaryReader(memoryview(b"")))
        elif "input" in document:
            if len(self.plane.inputs) != 1:
                raise InvalidRequest(
                    f"input: this model takes {len(self.plane.inputs)} inputs; "
                    'send {"inputs": [tensors]} (OIP v2)'
                )
            batch, _ = instances_array("input", self.plane.inputs[0], document["input"])
            arrays = (batch,)
        else:
            raise InvalidRequest('inputs: expected {"inputs": [tensors]} or {"input": data}')
        given = message.fields.get(b"id")
        document_id = document.get("id")
        if given is not None:
            request_id = given.decode(errors="replace")
        elif isinstance(document_id, str):
            request_id = document_id
        else:
            request_id = message.entry_id.decode()
        return arrays, request_id

    async def _answer(
        self, client: aioredis.Redis, message: StreamMessage, result: StreamResult
    ) -> None:
        fields: dict[FieldT, EncodableT] = {
            "id": result.request_id,
            "message_id": message.entry_id,
            "model_name": self.plane.name,
            "model_version": self.plane.config.variant,
            "outputs": _outputs_json(result.outputs),
            "latency_ms": f"{(time.perf_counter() - message.read_at) * 1000:.3f}",
        }
        if b"reply_to" in message.fields:
            fields["reply_to"] = message.fields[b"reply_to"]
        await self._settle(client, self.config.output, fields, message.entry_id)
        self.metrics.stream_message("succeeded")

    async def _failed(self, client: aioredis.Redis, message: StreamMessage, error: str) -> None:
        """Count the failure; dead-letter the message once it failed max_failures deliveries."""
        self.metrics.stream_message("failed")
        deliveries = await self._deliveries(client, message.entry_id)
        if deliveries < self.config.max_failures:
            log.warning(
                "stream message %s failed (delivery %d of %d): %s",
                message.entry_id.decode(),
                deliveries,
                self.config.max_failures,
                error,
            )
            return
        fields: dict[FieldT, EncodableT] = {key: value for key, value in message.fields.items()}
        fields |= {
            "message_id": message.entry_id,
            "stream": self.config.input,
            "error": error,
            "deliveries": deliveries,
            "model_version": self.plane.config.variant,
        }
        await self._settle(client, self.config.dead_letter, fields, message.entry_id)
        self.metrics.stream_message("dead_lettered")
        log.warning("stream message %s dead-lettered: %s", message.entry_id.decode(), error)

    async def _deliveries(self, client: aioredis.Redis, entry_id: bytes) -> int:
        """Times the entry was delivered; 0 when it is no longer pending here (another
        consumer reclaimed or answered it), so it is neither retried nor dead-lettered here."""
        pending = await client.xpending_range(
            self.config.input, self.config.group, min=entry_id, max=entry_id, count=1
        )
        if not pending or pending[0]["consumer"] != self.consumer.encode():
            return 0
        return int(pending[0]["times_delivered"])

    async def _settle(
        self,
        client: aioredis.Redis,
        stream: str,
        fields: dict[FieldT, EncodableT],
        entry_id: bytes,
    ) -> None:
        """Write, then acknowledge, in one MULTI/EXEC: never an ack without the write."""
        pipeline = client.pipeline(transaction=True)
        pipeline.xadd(stream, fields, maxlen=self.config.max_stream_len, approximate=True)
        pipeline.xack(self.config.input, self.config.group, entry_id)
        await pipeline.execute()

    async def _retire(self, client: aioredis.Redis) -> None:
        """Leave the group on a clean stop when nothing is pending here, so restarts (a new
        host-pid each) do not pile up consumers. Only this consumer adds to its own list."""
        try:
            mine = await client.xpending_range(
                self.config.input, self.config.group, "-", "+", 1, consumername=self.consumer
            )
            if not mine:
                await client.xgroup_delconsumer(self.config.input, self.config.group, self.consumer)
        except (aioredis.RedisError, OSError) as exc:
            log.info("stream consumer %s not removed: %s", self.consumer, exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _outputs_json(outputs: list[OutputTensor]) -> bytes:
    """The outputs as v2 JSON tensors: a stream answer carries no binary part."""
    entries, _ = encode_outputs((tensor, False) for tensor in outputs)
    return orjson.dumps(entries, option=orjson.OPT_SERIALIZE_NUMPY)
