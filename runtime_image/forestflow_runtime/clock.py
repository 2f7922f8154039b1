"""Time for code that waits: a monotonic clock and timers that fire as it moves on, both passed
in so that a test drives time rather than sleeping through it (STYLE.md: the clock is injected).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], float]
"""Monotonic seconds: time.monotonic, which the event loop's own timers also follow."""


class Timer(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Timer]
"""Run a callback on the event loop once the clock has moved on by the given seconds."""


def loop_timer(delay_s: float, callback: Callable[[], None]) -> Timer:
    """A timer on the running event loop, whose clock is time.monotonic."""
    return asyncio.get_running_loop().call_later(delay_s, callback)
