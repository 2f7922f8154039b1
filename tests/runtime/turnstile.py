"""A turnstile for calls made on other threads (the runtime's model thread): each call waits
until the test lets it through, and the test can wait until so many calls have arrived. The
test, not a sleep, decides when a model is busy and when each call ends."""

from __future__ import annotations

import asyncio
import math
import threading


class Turnstile:
    def __init__(self, name: str, hold_s: float) -> None:
        self.name = name
        self._hold_s = hold_s
        self._state = threading.Condition()
        self._arrived = 0
        self._allowed = 0.0

    def pass_through(self) -> None:
        """Arrive, then wait to be let through; a call the test forgets fails loudly."""
        with self._state:
            self._arrived += 1
            call = self._arrived
            self._state.notify_all()
            if not self._state.wait_for(lambda: self._allowed >= call, self._hold_s):
                raise TimeoutError(f"{self.name}: the test never let call {call} through")

    @property
    def arrived(self) -> int:
        with self._state:
            return self._arrived

    def let_through(self, calls: int = 1) -> None:
        with self._state:
            self._allowed += calls
            self._state.notify_all()

    def open(self) -> None:
        """Every call from now on goes straight through."""
        with self._state:
            self._allowed = math.inf
            self._state.notify_all()

    def wait_arrived(self, calls: int, timeout_s: float = 60.0) -> None:
        """Until `calls` calls in all have arrived."""
        with self._state:
            if not self._state.wait_for(lambda: self._arrived >= calls, timeout_s):
                raise TimeoutError(f"{self.name}: {self._arrived} of {calls} calls came")

    async def arrival(self, calls: int) -> None:
        await asyncio.to_thread(self.wait_arrived, calls)
