"""Runtime processes of the local platform: start one per replica (forked from the zygote
when it runs, else spawned), wait for readiness, stop on dehydration or shutdown. Each PID
is written under the state directory so that `ffctl down` can stop a runtime even if the
gateway that started it died. Which replicas should run is the pools' business, not this
module's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from forestflow_control_plane.platforms.local.processes import (
    ForkedProcess,
    RuntimeProcess,
    SpawnedProcess,
)

READY_POLL_S = 0.01
STOP_GRACE_S = 10.0
LOG_TAIL_BYTES = 2000
ZYGOTE_START_S = 60.0

log = logging.getLogger("forestflow.supervisor")


class HydrationError(RuntimeError):
    """A runtime did not become ready; the message carries the tail of its log."""


@dataclass
class Replica:
    process: RuntimeProcess
    port: int
    pid_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class RuntimeSpec:
    """What a replica needs: its service's name, environment and readiness path."""

    service: str
    env: dict[str, str]
    ready_path: str


class Supervisor:
    def __init__(
        self,
        state_dir: Path,
        client: httpx.AsyncClient,
        use_zygote: bool = True,
        platform_env: Mapping[str, str] | None = None,
    ) -> None:
        """`platform_env` is what every runtime gets from the platform rather than from its
        Service (the Redis URL for payload events)."""
        self._platform_env = dict(platform_env or {})
        self._pids = state_dir / "pids" / "runtimes"
        self._zygote_pid = state_dir / "pids" / "zygote.pid"
        self._logs = state_dir / "logs"
        self._client = client
        self._use_zygote = use_zygote
        self._zygote: SpawnedProcess | None = None
        self._zygote_ready: asyncio.Task[bool] | None = None
        self._zygote_socket = state_dir / "zygote.sock"
        self._pids.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)

    async def open(self) -> None:
        """Start the zygote, warming in the background: without one, replicas are spawned
        (slower, still correct)."""
        if not self._use_zygote:
            return
        self._zygote_socket.unlink(missing_ok=True)
        log_path = self._logs / "zygote.log"
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "forestflow_runtime.zygote",
                str(self._zygote_socket),
                # The zygote imports torch for its children: idle OpenMP threads must not spin
                # and starve a runtime's event loop (forestflow_runtime's own default).
                env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ},
                stdout=log_file, stderr=log_file, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        self._zygote_pid.write_text(f"{process.pid}\n")
        self._zygote = SpawnedProcess(process)
        self._zygote_ready = asyncio.create_task(self._await_zygote(log_path))

    async def close(self) -> None:
        if self._zygote_ready is not None:
            self._zygote_ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._zygote_ready
        await self._stop_zygote()

    async def start(self, spec: RuntimeSpec, timeout: float) -> Replica:
        """Start a replica and return it once ready; stop it and raise if it is not. Safe to
        cancel: a replica cancelled while starting is killed, never left behind."""
        port = _free_port()
        env = {**self._platform_env, **spec.env, "FF_HOST": "127.0.0.1", "FF_PORT": str(port)}
        safe = spec.service.replace("/", "_")
        log_path = self._logs / f"runtime-{safe}-{port}.log"
        launching = asyncio.ensure_future(self._launch(env, log_path))
        try:
            process = await asyncio.shield(launching)
        except asyncio.CancelledError:
            launching.add_done_callback(_kill_launched)
            raise
        pid_file = self._pids / f"{safe}-{port}.pid"
        pid_file.write_text(f"{process.pid}\n")
        replica = Replica(process, port, pid_file)
        try:
            await asyncio.wait_for(self._until_ready(replica, spec.ready_path), timeout)
        except (TimeoutError, HydrationError) as exc:
            await self.stop(replica)
            why = "did not become ready in time" if isinstance(exc, TimeoutError) else str(exc)
            raise HydrationError(f"{spec.service}: {why}; log: {_tail(log_path)}") from None
        except asyncio.CancelledError:
            await self.stop(replica, grace=0.0)  # not ready: nothing in flight to finish
            raise
        return replica

    async def stop(self, replica: Replica, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL after `grace`; the runtime finishes in-flight work first."""
        await _terminate(replica.process, grace)
        replica.pid_file.unlink(missing_ok=True)

    async def _launch(self, env: dict[str, str], log_path: Path) -> RuntimeProcess:
        ready = self._zygote_ready is not None and await asyncio.shield(self._zygote_ready)
        if ready and self._zygote is not None and self._zygote.running:
            try:
                return ForkedProcess(await self._fork(env, log_path))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("zygote fork failed (%s); spawning instead", exc)
        with log_path.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "forestflow_runtime",
                env={**os.environ, **env}, stdout=log_file, stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
        return SpawnedProcess(process)

    async def _fork(self, env: dict[str, str], log_path: Path) -> int:
        reader, writer = await asyncio.open_unix_connection(str(self._zygote_socket))
        try:
            writer.write(json.dumps({"env": env, "log": str(log_path)}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if "error" in reply:
            raise OSError(reply["error"])
        return int(reply["pid"])

    async def _await_zygote(self, log_path: Path) -> bool:
        try:
            await asyncio.wait_for(self._until_zygote_listens(), ZYGOTE_START_S)
            return True
        except (TimeoutError, HydrationError):
            log.warning("zygote did not start, spawning runtimes: %s", _tail(log_path))
            await self._stop_zygote()
            return False

    async def _until_zygote_listens(self) -> None:
        while True:
            if self._zygote is None or not self._zygote.running:
                raise HydrationError("zygote exited")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_unix_connection(str(self._zygote_socket))
                writer.close()
                return
            await asyncio.sleep(READY_POLL_S)

    async def _until_ready(self, replica: Replica, path: str) -> None:
        while True:
            if not replica.process.running:
                raise HydrationError("exited before it was ready")
            with contextlib.suppress(httpx.TransportError):
                response = await self._client.get(replica.url + path, timeout=1.0)
                if response.status_code == 200:
                    return
            await asyncio.sleep(READY_POLL_S)

    async def _stop_zygote(self) -> None:
        if self._zygote is not None:
            await _terminate(self._zygote, STOP_GRACE_S)
            self._zygote = None
        self._zygote_pid.unlink(missing_ok=True)
        self._zygote_socket.unlink(missing_ok=True)


async def _terminate(process: RuntimeProcess, grace: float) -> None:
    if process.running:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.send_signal(signal.SIGKILL)
            await process.wait()
    else:
        await process.wait()


def _kill_launched(launching: asyncio.Future[RuntimeProcess]) -> None:
    """The process of a launch whose start was cancelled: killed (its parent reaps it)."""
    if not launching.cancelled() and launching.exception() is None:
        launching.result().send_signal(signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-LOG_TAIL_BYTES:]
    except OSError:
        return ""
    return data.decode(errors="replace").strip().replace("\n", " | ")
