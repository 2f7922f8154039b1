"""The runtime processes the supervisor holds: children it spawned itself, or children the
zygote forked (not ours to wait on, so they are watched through a pidfd). Both offer the
same small interface."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
from typing import Protocol


class RuntimeProcess(Protocol):
    pid: int

    @property
    def running(self) -> bool: ...

    def send_signal(self, sig: signal.Signals) -> None: ...

    async def wait(self) -> None: ...


class SpawnedProcess:
    """A runtime started as our own child with `python -m forestflow_runtime`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid

    @property
    def running(self) -> bool:
        return self._process.returncode is None

    def send_signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(sig)

    async def wait(self) -> None:
        await self._process.wait()


class ForkedProcess:
    """A runtime forked by the zygote; a pidfd tells its exit and never hits a reused PID.
    Any number of tasks may wait on it at once (the pool's exit watch and a stop)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._exited: asyncio.Future[None] | None = None
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = -1

    @property
    def running(self) -> bool:
        if self._pidfd < 0:
            return False
        readable, _, _ = select.select([self._pidfd], [], [], 0)
        return not readable

    def send_signal(self, sig: signal.Signals) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    async def wait(self) -> None:
        if self._exited is None:
            self._exited = asyncio.get_running_loop().create_future()
            if self.running:
                asyncio.get_running_loop().add_reader(self._pidfd, self._on_exit)
            else:
                self._on_exit()
        await asyncio.shield(self._exited)

    def _on_exit(self) -> None:
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)
