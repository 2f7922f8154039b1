"""`python -m forestflow_runtime.zygote SOCKET`: a pre-warmed parent for runtime processes. It
imports torch and the runtime once, then forks a child per replica, so waking a variant from
zero costs the model load, not the interpreter start and the heavy imports. It lives here, not
in the control plane that launches it, because it runs the runtime's code: the local platform
starts it by module name, as it starts `python -m forestflow_runtime`.

Protocol, over a Unix socket: the local platform's supervisor sends one JSON line
`{"env": {...}, "log": "/path"}` and reads back `{"pid": N}` or `{"error": "..."}`.
The zygote stays single-threaded and never touches CUDA, so forking it is safe; it reaps
its children, and a child runs in its own session with stdout/stderr in its log.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from forestflow_runtime.__main__ import main as serve_runtime

# Imported before the first fork, so that no child pays for them.
PRELOAD = (
    "numpy",
    "torch",
    "safetensors.torch",
    "uvicorn",
    "orjson",
    "prometheus_client",
    "forestflow_runtime.server",
)
REQUEST_MAX_BYTES = 1 << 20


def main(socket_path: str) -> None:
    """Preload, then answer fork requests on `socket_path` until SIGTERM."""
    for module in PRELOAD:
        importlib.import_module(module)
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    Path(socket_path).unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(socket_path)
        server.listen(64)
        print("zygote ready", file=sys.stderr, flush=True)
        while True:
            conn, _ = server.accept()
            with conn:
                _serve(conn, server)


def _serve(conn: socket.socket, server: socket.socket) -> None:
    """Answer one fork request; the child closes both sockets and never returns here."""
    data = b""
    while not data.endswith(b"\n") and len(data) < REQUEST_MAX_BYTES:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data:
        return  # a liveness probe: connect, then close
    try:
        request = json.loads(data)
        pid = _fork(request["env"], request["log"], (server, conn))
        reply: dict[str, Any] = {"pid": pid}
    except (ValueError, KeyError, TypeError, OSError) as exc:
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(reply).encode() + b"\n")


def _fork(env: dict[str, str], log: str, sockets: tuple[socket.socket, ...]) -> int:
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.fork()
    if pid:
        os.close(log_fd)
        return pid
    code = 1
    try:
        for sock in sockets:
            sock.close()
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.environ.update(env)
        code = serve_runtime()
    except BaseException as exc:
        if not isinstance(exc, SystemExit):
            print(f"runtime child failed: {exc!r}", file=sys.stderr, flush=True)
        else:
            code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(signum: int, frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    main(sys.argv[1])
