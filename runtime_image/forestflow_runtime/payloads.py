"""Sampled request/response events to a capped Redis stream, for the shadow mirror and logs.

record() runs on the request path and only samples and appends to a bounded buffer; a
background task serialises and XADDs in pipelines. A slow or absent Redis never slows
inference: when the buffer is full, or Redis fails, events are dropped and counted.
"""

import asyncio
import collections
import logging
import random
import time
import uuid
from dataclasses import dataclass

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from forestflow_runtime.config import PayloadConfig
from forestflow_runtime.metrics import RuntimeMetrics

log = logging.getLogger(__name__)
_BATCH = 100
_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class PayloadEvent:
    request_id: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    latency_s: float
    at: float


class PayloadSink:
    def __init__(
        self, config: PayloadConfig, contract: str, variant: str, metrics: RuntimeMetrics
    ) -> None:
        self.config = config
        self.labels: dict[FieldT, EncodableT] = {"contract": contract, "variant": variant}
        self.metrics = metrics
        self._buffer: collections.deque[PayloadEvent] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ff-payloads")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.metrics.payload_dropped(len(self._buffer))
        self._buffer.clear()

    def record(
        self,
        request_id: str | None,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        latency_s: float,
    ) -> None:
        """Sample one finished request; never blocks, never raises."""
        if random.random() >= self.config.sample_rate:
            return
        if len(self._buffer) >= self.config.max_buffer:
            self.metrics.payload_dropped()
            return
        event_id = request_id or uuid.uuid4().hex
        self._buffer.append(PayloadEvent(event_id, inputs, outputs, latency_s, time.time()))
        self._wakeup.set()

    async def _run(self) -> None:
        client = aioredis.Redis.from_url(
            self.config.redis_url or "", socket_timeout=1.0, socket_connect_timeout=1.0
        )
        try:
            while True:
                if not self._buffer:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                events = [self._buffer.popleft() for _ in range(min(_BATCH, len(self._buffer)))]
                try:
                    await self._send(client, events)
                except (aioredis.RedisError, OSError) as exc:
                    self.metrics.payload_dropped(len(events))
                    log.warning("payload events dropped (%d): %s", len(events), exc)
                    await asyncio.sleep(_RETRY_S)
        finally:
            await client.aclose()

    async def _send(self, client: "aioredis.Redis", events: list[PayloadEvent]) -> None:
        pipeline = client.pipeline(transaction=False)
        for event in events:
            pipeline.xadd(
                self.config.stream,
                self._fields(event),
                maxlen=self.config.max_stream_len,
                approximate=True,
            )
        await pipeline.execute()

    def _fields(self, event: PayloadEvent) -> dict[FieldT, EncodableT]:
        return {
            **self.labels,
            "request_id": event.request_id,
            "inputs": _tensors(event.inputs),
            "outputs": _tensors(event.outputs),
            "latency_ms": f"{event.latency_s * 1000:.3f}",
            "time": f"{event.at:.6f}",
        }


def _tensors(named: dict[str, np.ndarray]) -> bytes:
    return orjson.dumps(
        {name: {"shape": list(a.shape), "data": a.ravel()} for name, a in named.items()},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
