"""The model's one worker thread: runs calls off the event loop and resolves asyncio Futures.

A bare thread fed by a SimpleQueue costs about half the round trip of ThreadPoolExecutor plus
run_in_executor (no concurrent.futures.Future to chain), which matters for lone requests.
"""

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class _Call:
    fn: Callable[[Any], Any]
    argument: Any
    future: "asyncio.Future[Any]"
    loop: asyncio.AbstractEventLoop


def _resolve(future: "asyncio.Future[Any]", result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting side gave up (cancelled); nobody wants the result
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class ModelWorker:
    """initializer runs first on the thread: per-thread settings such as torch's (OpenMP's)
    intra-op thread count, which a setting made on the main thread does not reach."""

    def __init__(
        self, name: str = "ff-model", initializer: Callable[[], None] | None = None
    ) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._initializer = initializer

    def start(self) -> None:
        self._thread.start()

    def submit(self, fn: Callable[[T], R], argument: T) -> "asyncio.Future[R]":
        """Run fn(argument) on the worker thread; the Future resolves on the calling loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._calls.put(_Call(fn, argument, future, loop))
        return future

    def close(self) -> None:
        """Finish the call in progress and any queued, then stop the thread."""
        if self._thread.is_alive():
            self._calls.put(None)
            self._thread.join()

    def _run(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer()
            except Exception:  # a thread setting is not worth a server that never answers
                log.exception("model thread initializer failed; serving with defaults")
        while (call := self._calls.get()) is not None:
            try:
                result, error = call.fn(call.argument), None
            except BaseException as exc:
                result, error = None, exc
            try:
                call.loop.call_soon_threadsafe(_resolve, call.future, result, error)
            except RuntimeError:
                continue  # the loop closed while the model ran: nobody is left to answer
