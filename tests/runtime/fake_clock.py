"""A clock that moves only when a test moves it, with the timers set on it: the batcher's
injected Clock and Schedule (forestflow_runtime.clock), so that a test steps through a window
or a deadline instead of sleeping through it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from forestflow_runtime.clock import Timer


@dataclass(eq=False)
class FakeTimer:
    at: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Call it for the time; `schedule` is the batcher's Schedule; `advance` moves time on."""

    def __init__(self) -> None:
        self._now = 0.0
        self._timers: list[FakeTimer] = []
        self.delays: list[float] = []  # every delay asked of schedule, in order

    def __call__(self) -> float:
        return self._now

    def schedule(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        self.delays.append(delay_s)
        if delay_s <= 0:  # due already: it runs on the loop's next turn, as a real timer would
            return asyncio.get_running_loop().call_soon(callback)
        timer = FakeTimer(self._now + delay_s, callback)
        self._timers.append(timer)
        return timer

    def pending(self) -> list[float]:
        """When the timers still set will fire, soonest first."""
        return sorted(timer.at for timer in self._timers if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, running each timer that comes due, soonest first."""
        self._now += seconds
        live = [timer for timer in self._timers if not timer.cancelled]
        due = sorted((timer for timer in live if timer.at <= self._now), key=lambda t: t.at)
        self._timers = [timer for timer in live if timer.at > self._now]
        for timer in due:
            timer.callback()
