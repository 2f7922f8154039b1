"""The disconnect watch on its own: a fake ASGI receive, real tasks and timers."""

import asyncio

from forestflow_runtime.disconnect import DisconnectWatch
from forestflow_runtime.types import Message


class FakeReceive:
    """Counts calls; answers `message` after `delay_s` (never, when message is None)."""

    def __init__(self, message: Message | None, delay_s: float = 0.0) -> None:
        self.message = message
        self.delay_s = delay_s
        self.calls = 0

    async def __call__(self) -> Message:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.message is None:
            await asyncio.Event().wait()
        assert self.message is not None
        return self.message


async def waiting_task() -> "asyncio.Task[None]":
    task = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    return task


async def test_quick_answer_never_listens() -> None:
    receive = FakeReceive({"type": "http.disconnect"})
    task = await waiting_task()
    watch = DisconnectWatch(task, receive, after_s=0.05)
    watch.close()
    await asyncio.sleep(0.1)
    assert receive.calls == 0 and not watch.gone and not task.cancelled()
    task.cancel()


async def test_disconnect_after_the_delay_cancels_the_handler() -> None:
    receive = FakeReceive({"type": "http.disconnect"}, delay_s=0.02)
    task = await waiting_task()
    watch = DisconnectWatch(task, receive, after_s=0.02)
    await asyncio.wait([task], timeout=5)
    assert task.cancelled() and watch.gone and receive.calls == 1
    watch.close()


async def test_other_messages_and_close_leave_the_handler_alone() -> None:
    receive = FakeReceive({"type": "http.request", "body": b""})
    task = await waiting_task()
    watch = DisconnectWatch(task, receive, after_s=0.01)
    await asyncio.sleep(0.05)
    assert receive.calls == 1 and not watch.gone and not task.done()
    silent = FakeReceive(None)
    other = DisconnectWatch(task, silent, after_s=0.01)
    await asyncio.sleep(0.03)
    other.close()  # cancels the pending receive(); the handler keeps running
    await asyncio.sleep(0.01)
    assert silent.calls == 1 and not task.done()
    watch.close()
    task.cancel()
