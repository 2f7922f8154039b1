"""The disconnect watch on its own: a fake ASGI receive, real tasks, and its timer on a fake
clock, so that the test moves time past the watch's delay instead of sleeping through it."""

import asyncio

from forestflow_runtime.disconnect import DisconnectWatch
from forestflow_runtime.types import Message
from tests.runtime.fake_clock import FakeClock

# How long a wait that should end at once may take before the test fails rather than hangs.
GUARD_S = 60.0
AFTER_S = 0.25


class FakeReceive:
    """Counts calls; answers `message` at once, or never when it is None (until cancelled)."""

    def __init__(self, message: Message | None) -> None:
        self.message = message
        self.calls = 0
        self.cancelled = False

    async def __call__(self) -> Message:
        self.calls += 1
        if self.message is None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        assert self.message is not None
        return self.message


def handler() -> "asyncio.Task[bool]":
    """A stand-in for an inference handler: it runs until it is cancelled."""
    return asyncio.create_task(asyncio.Event().wait())


async def turns(count: int = 5) -> None:
    """Let the event loop run `count` turns: enough for a task started now to run, and for its
    result's callbacks (no I/O and no real timer is involved)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_quick_answer_never_listens() -> None:
    clock, receive, task = FakeClock(), FakeReceive({"type": "http.disconnect"}), handler()
    watch = DisconnectWatch(task, receive, after_s=AFTER_S, schedule=clock.schedule)
    assert clock.pending() == [AFTER_S]
    watch.close()
    assert clock.pending() == [], "closing cancels the timer"
    clock.advance(10 * AFTER_S)
    await turns()
    assert receive.calls == 0 and not watch.gone and not task.done()
    task.cancel()


async def test_disconnect_after_the_delay_cancels_the_handler() -> None:
    clock, receive, task = FakeClock(), FakeReceive({"type": "http.disconnect"}), handler()
    watch = DisconnectWatch(task, receive, after_s=AFTER_S, schedule=clock.schedule)
    clock.advance(AFTER_S / 2)
    await turns()
    assert receive.calls == 0, "it listens only once the delay has passed"
    clock.advance(AFTER_S / 2)
    done, _ = await asyncio.wait([task], timeout=GUARD_S)
    assert done == {task}, "the handler was never cancelled"
    assert task.cancelled() and watch.gone and receive.calls == 1
    watch.close()


async def test_other_messages_and_close_leave_the_handler_alone() -> None:
    clock, task = FakeClock(), handler()
    receive = FakeReceive({"type": "http.request", "body": b""})
    watch = DisconnectWatch(task, receive, after_s=AFTER_S, schedule=clock.schedule)
    clock.advance(AFTER_S)
    await turns()
    assert receive.calls == 1 and not watch.gone and not task.done()
    silent = FakeReceive(None)
    other = DisconnectWatch(task, silent, after_s=AFTER_S, schedule=clock.schedule)
    clock.advance(AFTER_S)
    await turns()
    assert silent.calls == 1 and not silent.cancelled
    other.close()  # cancels the pending receive(); the handler keeps running
    await turns()
    assert silent.cancelled and not other.gone and not task.done()
    watch.close()
    task.cancel()
