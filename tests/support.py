"""Test support: free ports on 127.0.0.1, ASGI apps under real uvicorn servers, a file server
that answers when told, and waiting on a condition that an event elsewhere makes true."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any, port: int) -> Iterator[str]:
    """Run an ASGI app on a real uvicorn server on 127.0.0.1 in a thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll `check` until it holds (a process exit, a record written); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def example_mlp(target: Path, **seeds: int) -> Path:
    """The example MLP's code in `target`, with one weights file per name, built from its
    seed (`mlp=0, new=1` writes mlp.safetensors and new.safetensors)."""
    for name in ("model.py", "build.py"):
        shutil.copy(REPO / "examples" / "mlp" / name, target)
    builds = "; ".join(
        f"build(Path(sys.argv[1]) / '{name}.safetensors', {seed})" for name, seed in seeds.items()
    )
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
        f"from build import build; {builds}"
    )
    subprocess.run([sys.executable, "-c", script, str(target)], check=True)
    return target


class Held:
    """A file server whose answers wait until `released`: weights that take as long to fetch
    as a test needs, as over a slow link."""

    def __init__(self, root: Path) -> None:
        self.asked, self.released = threading.Event(), threading.Event()
        held = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                held.asked.set()
                held.released.wait(60)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
