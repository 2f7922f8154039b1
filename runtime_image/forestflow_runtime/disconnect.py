"""Cancel an inference handler whose client hung up, so the batcher skips its request.

Listening costs a task per request (ASGI reports a disconnect only through receive()), which
is a good part of the whole per-request budget of a small model. So the watch starts only once
the request has waited WATCH_AFTER_S: a request answered sooner costs one timer, and a client
that gave up on a request stuck in a long queue is still dropped before the model runs.
"""

import asyncio

from forestflow_runtime.clock import Schedule, Timer, loop_timer
from forestflow_runtime.types import Message, Receive

WATCH_AFTER_S = 0.25


class DisconnectWatch:
    """Cancels `task` when receive() reports http.disconnect; close() before answering.
    `schedule` sets the timer (the event loop's; a test passes its own clock's)."""

    __slots__ = ("_closed", "_receive", "_task", "_timer", "_watcher", "gone")

    def __init__(
        self,
        task: "asyncio.Task[object]",
        receive: Receive,
        after_s: float = WATCH_AFTER_S,
        schedule: Schedule = loop_timer,
    ) -> None:
        self._task = task
        self._receive = receive
        self._closed = False
        self._watcher: asyncio.Future[Message] | None = None
        self._timer: Timer | None = schedule(after_s, self._start)
        self.gone = False

    def _start(self) -> None:
        self._timer = None
        if not self._closed:
            self._watcher = asyncio.ensure_future(self._receive())
            self._watcher.add_done_callback(self._on_message)

    def _on_message(self, watcher: "asyncio.Future[Message]") -> None:
        if self._closed or watcher.cancelled() or watcher.exception() is not None:
            return
        if watcher.result().get("type") == "http.disconnect":
            self.gone = True
            self._task.cancel()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
