"""Dynamic batching: one background task per model, one Future per request, no HTTP.

A request joins a queue; the batching task takes the oldest live request and every queued one
with the same per-instance shapes, up to max_batch_size rows. A lone request on an idle model
is dispatched at once. The window (measured from the later of the oldest request's arrival and
the end of the previous batch: see _gather) is spent gathering only when the previous batch
held several requests, i.e. when there is evidence of concurrency, and it ends early once the
batch is as large as the previous one: under steady load of C clients, a batch goes as soon as
the C are in. Inference runs on one worker thread; outputs are split back by row counts after a
size check that fails the whole batch rather than guess. All of it runs on an injected clock and
its timers (clock.py), so tests step time through the window and the deadlines.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from forestflow_runtime.clock import Clock, Schedule, loop_timer
from forestflow_runtime.config import BatchingConfig
from forestflow_runtime.errors import DeadlineExceeded, ModelFailed, ModelNotReady, QueueFull
from forestflow_runtime.worker import ModelWorker

Model = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
ShapeKey = tuple[tuple[int, ...], ...]


class BatchObserver(Protocol):
    def batch_done(self, rows: int, model_seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Pending:
    """One queued request: its arrays (in declared input order) and the Future to answer."""

    inputs: tuple[np.ndarray, ...]
    rows: int
    key: ShapeKey
    future: asyncio.Future[list[np.ndarray]]
    enqueued_at: float


def shape_key(inputs: Sequence[np.ndarray]) -> ShapeKey:
    """Requests are batched together only when every input's per-instance shape agrees."""
    if len(inputs) == 1:  # the common case, without a generator
        return (inputs[0].shape[1:],)
    return tuple(a.shape[1:] for a in inputs)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _expire(future: asyncio.Future[list[np.ndarray]]) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded("request deadline passed before the model answered"))


class Batcher:
    """Owns the queue, the batching task and the model's worker thread. `clock` (monotonic
    seconds) and `schedule` (timers on it) time the window and the request deadlines."""

    def __init__(
        self,
        config: BatchingConfig,
        observer: BatchObserver,
        thread_init: Callable[[], None] | None = None,
        *,
        clock: Clock = time.monotonic,
        schedule: Schedule = loop_timer,
    ) -> None:
        self.config = config
        self.observer = observer
        self._clock = clock
        self._schedule = schedule
        self.model: Model | None = None
        self._queue: collections.deque[Pending] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None  # the batching task's, while it sleeps
        self._worker = ModelWorker(initializer=thread_init)
        self._task: asyncio.Task[None] | None = None
        self._last_batch_requests = 0
        self._last_batch_rows = 0
        self._last_batch_end = 0.0
        self._closed = False

    @property
    def depth(self) -> int:
        """Queued requests (cancelled ones included until the batching task drops them)."""
        return len(self._queue)

    def start(self) -> None:
        self._worker.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ff-batcher")

    async def close(self) -> None:
        """Stop taking requests; fail what is still queued; wait for the running batch."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        _fail(list(self._queue), ModelNotReady("server is shutting down"))
        self._queue.clear()
        await asyncio.to_thread(self._worker.close)

    async def infer(self, inputs: tuple[np.ndarray, ...], timeout_s: float) -> list[np.ndarray]:
        """Queue one request (all inputs share dim 0) and wait for its slice of a batch."""
        if self._closed or self.model is None:
            raise ModelNotReady("model is not ready")
        if len(self._queue) >= self.config.max_queue:
            raise QueueFull(f"queue is full ({self.config.max_queue} requests waiting)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        rows = inputs[0].shape[0]
        self._queue.append(Pending(inputs, rows, shape_key(inputs), future, self._clock()))
        if self._wakeup is not None:
            _wake(self._wakeup)
        timer = self._schedule(timeout_s, functools.partial(_expire, future))
        try:
            return await future
        finally:
            timer.cancel()

    async def _run(self) -> None:
        while True:
            if not self._queue:
                await self._sleep(None)
                continue
            batch = await self._gather()
            if batch:
                await self._dispatch(batch)

    async def _sleep(self, deadline: float | None) -> None:
        """Until infer() queues a request, or the clock reaches deadline (if any)."""
        self._wakeup = waiter = asyncio.get_running_loop().create_future()
        timer = None
        if deadline is not None:
            timer = self._schedule(deadline - self._clock(), functools.partial(_wake, waiter))
        try:
            await waiter
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    async def _gather(self) -> list[Pending]:
        first = self._pop_live()
        if first is None:
            return []
        batch = [first]
        rows = self._take_matching(batch, first.rows)
        if len(batch) == 1 and not self._busy(self._clock()):
            return batch
        # The window counts from the oldest arrival, and also from the end of the previous
        # batch: requests that queued behind a running batch have waited already, but the
        # clients that batch answered come back moments later. Waiting for them keeps batches
        # full instead of letting C clients split into two half-size cohorts that take turns
        # on the model, and the batch then goes when the event loop has parsed them, so the
        # model thread gets the GIL at once instead of queueing for it behind the loop.
        window_s = self.config.window_ms / 1000.0
        deadline = max(first.enqueued_at, self._last_batch_end) + window_s
        target = min(self.config.max_batch_size, max(self._last_batch_rows, 2))
        while rows < target and self._clock() < deadline:
            await self._sleep(deadline)
            rows = self._take_matching(batch, rows)
        return batch

    def _busy(self, now: float) -> bool:
        """Several requests shared the last batch, and it ended less than a window ago."""
        window_s = self.config.window_ms / 1000.0
        return self._last_batch_requests > 1 and now - self._last_batch_end < window_s

    def _pop_live(self) -> Pending | None:
        """The oldest request whose client still waits; cancelled or expired ones are dropped."""
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                return item
        return None

    def _take_matching(self, batch: list[Pending], rows: int) -> int:
        key, limit = batch[0].key, self.config.max_batch_size
        skipped: list[Pending] = []
        queue = self._queue
        while queue and rows < limit:
            item = queue.popleft()
            if item.future.done():
                continue
            if item.key != key:
                skipped.append(item)
            elif rows + item.rows > limit:
                queue.appendleft(item)
                break
            else:
                batch.append(item)
                rows += item.rows
        queue.extendleft(reversed(skipped))
        return rows

    async def _dispatch(self, batch: list[Pending]) -> None:
        model = self.model  # captured: a hot swap during this batch does not affect it
        assert model is not None
        rows = sum(item.rows for item in batch)
        self._last_batch_requests, self._last_batch_rows = len(batch), rows
        if len(batch) == 1:
            inputs: Sequence[np.ndarray] = batch[0].inputs
        else:
            columns = zip(*(item.inputs for item in batch), strict=True)
            inputs = [np.concatenate(column) for column in columns]
        started = self._clock()
        try:
            outputs = await self._worker.submit(model, inputs)
            _check_rows(outputs, rows)
        except asyncio.CancelledError:
            _fail(batch, ModelNotReady("server is shutting down"))
            raise
        except Exception as exc:
            error = exc if isinstance(exc, ModelFailed) else ModelFailed(f"model raised: {exc!r}")
            _fail(batch, error)
            return
        finally:
            self._last_batch_end = self._clock()
            self.observer.batch_done(rows, self._last_batch_end - started)
        start = 0
        for item in batch:
            end = start + item.rows
            if not item.future.done():
                item.future.set_result([output[start:end] for output in outputs])
            start = end


def _fail(batch: list[Pending], error: Exception) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)


def _check_rows(outputs: list[np.ndarray], rows: int) -> None:
    for index, output in enumerate(outputs):
        if output.ndim == 0 or output.shape[0] != rows:
            raise ModelFailed(
                f"output {index} has shape {list(output.shape)} for a batch of {rows} rows; "
                "refusing to split it across requests"
            )
