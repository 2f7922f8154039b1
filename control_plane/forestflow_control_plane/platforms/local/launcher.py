"""`ffctl up` and `ffctl down`: start the local platform's processes detached, record each
by PID (with its start time, so a reused PID is never signalled), and stop them all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil

from forestflow_control_plane.api.auth import admin_token, write_admin_token
from forestflow_control_plane.platforms.local.redis_server import (
    RedisUnavailableError,
    free_port,
    redis_command,
    wait_for_redis,
)
from forestflow_control_plane.settings import Settings, default_home

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PROCESSES = ("api", "worker", "gateway", "mirror")
# What forestflow's runtime imports beyond the control plane's own dependencies: pyproject's
# `runtime` extra. The local platform runs every model with that runtime, in this interpreter.
RUNTIME_MODULES = ("torch", "safetensors")


class LaunchError(RuntimeError):
    """A platform process did not start; the message carries the tail of its log."""


@dataclass(frozen=True)
class Tracked:
    name: str
    pid: int
    started: float

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            same = abs(process.create_time() - self.started) < 0.01
            return same and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


class Launcher:
    def __init__(self, home: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        self._env = dict(os.environ if environ is None else environ)
        self.home = home or Path(self._env.get("FF_HOME") or default_home())
        self._pids = self.home / "pids"
        self._logs = self.home / "logs"
        self._state = self.home / "platform.json"
        self.tokens_file = self.home / "tokens.yaml"

    def running(self) -> Settings | None:
        """Settings of the platform already up here, if every process is alive."""
        tracked = self._tracked()
        if not tracked or not all(t.alive() for t in tracked if t.name in (*PROCESSES, "redis")):
            return None
        return self.recorded()

    def recorded(self) -> Settings | None:
        """Settings of the platform last started here, whether or not all of it still runs:
        the API may answer while the worker is down."""
        if not self._state.exists():
            return None
        data = json.loads(self._state.read_text())
        return Settings(**{**data, "home": Path(data["home"])})

    def up(self, api_port: int | None = None, gateway_port: int | None = None) -> Settings:
        current = self.running()
        if current is not None:
            return current
        check_runtime()
        repaired = self._repair()
        if repaired is not None:
            return repaired
        self.down()
        self._pids.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)
        env = {**self._env, "FF_HOME": str(self.home)}
        if not env.get("FF_TOKENS_FILE") and not env.get("FF_ADMIN_TOKEN"):
            write_admin_token(self.tokens_file)
            env["FF_TOKENS_FILE"] = str(self.tokens_file)
        if not env.get("REDIS_URL"):
            port = free_port()
            (self.home / "redis").mkdir(parents=True, exist_ok=True)
            self._spawn("redis", redis_command(port, self.home / "redis"), env)
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        if api_port is not None:
            env["FF_API_PORT"] = str(api_port)
        if gateway_port is not None:
            env["FF_GATEWAY_PORT"] = str(gateway_port)
        settings = replace(Settings.from_env(env), home=self.home)
        env.update(settings.to_env())
        try:
            self._wait_redis(settings.redis_url)
            for name in PROCESSES:
                self._spawn(name, [sys.executable, "-m", "forestflow_control_plane", name], env)
            self._wait_http("api", settings.api_url + "/healthz")
            self._wait_http("gateway", settings.gateway_url + "/healthz")
        except LaunchError:
            self.down()
            raise
        self._state.write_text(json.dumps({**asdict(settings), "home": str(self.home)}))
        return settings

    def _repair(self) -> Settings | None:
        """Restart only the processes that died (a killed worker, a crashed Redis), keeping
        the rest serving; None when no platform is recorded here or its Redis is unreachable
        and not ours to restart."""
        settings = self.recorded()
        if settings is None:
            return None
        env = {**self._env, "FF_HOME": str(self.home), **settings.to_env()}
        if not env.get("FF_TOKENS_FILE") and not env.get("FF_ADMIN_TOKEN"):
            env["FF_TOKENS_FILE"] = str(self.tokens_file)
        dead = [name for name in PROCESSES if not self._alive(name)]
        try:
            if "redis" in self._names() and not self._alive("redis"):
                # Same port, same append-only file: every client reconnects to its data.
                port = urlparse(settings.redis_url).port or 6379
                self._spawn("redis", redis_command(port, self.home / "redis"), env)
                self._wait_redis(settings.redis_url)
            else:
                try:
                    wait_for_redis(settings.redis_url, lambda: True, timeout=2.0)
                except RedisUnavailableError:
                    return None
            if "gateway" in dead:
                # Its runtimes and zygote are orphans a new gateway would not know: stop them.
                orphans = [t for t in self._tracked() if t.name not in (*PROCESSES, "redis")]
                _stop_all(orphans)
                for pid_file in self._pids.glob("runtimes/*.pid"):
                    pid_file.unlink(missing_ok=True)
                (self._pids / "zygote.pid").unlink(missing_ok=True)
            for name in dead:
                self._spawn(name, [sys.executable, "-m", "forestflow_control_plane", name], env)
            if "api" in dead:
                self._wait_http("api", settings.api_url + "/healthz")
            if "gateway" in dead:
                self._wait_http("gateway", settings.gateway_url + "/healthz")
        except LaunchError:
            self.down()
            raise
        return settings

    def admin_token(self) -> str | None:
        """The admin token `up` generated for this platform, if it did."""
        return admin_token(self.tokens_file) if self.tokens_file.exists() else None

    def down(self) -> list[str]:
        """Stop every process this platform started, gateway first, Redis last."""
        order = {"gateway": 0, "worker": 1, "api": 2, "runtime": 3, "redis": 4}
        tracked = sorted(self._tracked(), key=lambda t: order.get(t.name.split("-")[0], 3))
        stopped = []
        for group in sorted({order.get(t.name.split("-")[0], 3) for t in tracked}):
            members = [t for t in tracked if order.get(t.name.split("-")[0], 3) == group]
            stopped += _stop_all(members)
        for pid_file in self._pid_files():
            pid_file.unlink(missing_ok=True)
        self._state.unlink(missing_ok=True)
        return stopped

    def _spawn(self, name: str, command: list[str], env: Mapping[str, str]) -> None:
        with (self._logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command, env=dict(env), stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        started = psutil.Process(process.pid).create_time()
        (self._pids / f"{name}.pid").write_text(f"{process.pid} {started}\n")

    def _tracked(self) -> list[Tracked]:
        tracked = []
        for pid_file in self._pid_files():
            fields = pid_file.read_text().split()
            if not fields:
                continue
            pid = int(fields[0])
            started = float(fields[1]) if len(fields) > 1 else _create_time(pid)
            name = pid_file.stem if pid_file.parent == self._pids else f"runtime-{pid_file.stem}"
            tracked.append(Tracked(name, pid, started))
        return tracked

    def _pid_files(self) -> list[Path]:
        if not self._pids.exists():
            return []
        return sorted(self._pids.glob("*.pid")) + sorted(self._pids.glob("runtimes/*.pid"))

    def _wait_redis(self, url: str) -> None:
        try:
            wait_for_redis(url, lambda: self._alive("redis") or "redis" not in self._names())
        except RedisUnavailableError:
            raise LaunchError(f"Redis at {url} did not answer: {self._tail('redis')}") from None

    def _names(self) -> set[str]:
        return {t.name for t in self._tracked()}

    def _wait_http(self, name: str, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self._alive(name):
                raise LaunchError(f"{name} exited: {self._tail(name)}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise LaunchError(f"{name} did not answer at {url}: {self._tail(name)}")

    def _alive(self, name: str) -> bool:
        return any(t.alive() for t in self._tracked() if t.name == name)

    def _tail(self, name: str) -> str:
        path = self._logs / f"{name}.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else "(no log)"


def check_runtime() -> None:
    """Refuse to start a platform that could not serve a model, saying what to install,
    rather than let the first request find a runtime that cannot start."""
    missing = [module for module in RUNTIME_MODULES if find_spec(module) is None]
    if missing:
        raise LaunchError(
            "the local platform runs models with forestflow's runtime, which needs "
            f"{', '.join(missing)}: pip install 'forestflow[runtime]'"
        )


def _stop_all(tracked: list[Tracked]) -> list[str]:
    live = [t for t in tracked if t.alive()]
    for t in live:
        _signal(t.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(t.alive() for t in live) and time.monotonic() < deadline:
        time.sleep(0.05)
    for t in live:
        _signal(t.pid, signal.SIGKILL)  # the leader, if still there, and any leftover helper
    while any(t.alive() for t in live):
        time.sleep(0.02)
    return [t.name for t in live]


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process's whole group: each was started as a session leader, and its
    helpers (RQ's scheduler and work horses) must go with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0
