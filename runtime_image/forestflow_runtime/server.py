"""Run the runtime under uvicorn: graceful SIGTERM (in-flight requests finish), exit codes."""

import logging
import signal

import uvicorn

from forestflow_runtime.app import RuntimeApp
from forestflow_runtime.config import RuntimeConfig
from forestflow_runtime.loading import configure_threads

log = logging.getLogger("forestflow_runtime")


def build_server(config: RuntimeConfig, app: RuntimeApp) -> uvicorn.Server:
    """A uvicorn server for app; logging is left to the caller (log_config=None)."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            lifespan="on",
            access_log=False,
            log_config=None,
            timeout_keep_alive=30,
            # Nothing here reads X-Forwarded-*; the middleware would cost every request a layer.
            proxy_headers=False,
            server_header=False,
        )
    )


def serve(config: RuntimeConfig) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or until the initial model load fails (exit 1)."""
    configure_threads(config.cpu_threads)
    failures: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        failures.append(exc)
        server.should_exit = True

    app = RuntimeApp(config, on_fatal=on_fatal)
    server = build_server(config, app)
    # uvicorn drains, restores the previous handler and re-raises the signal it caught; a
    # drained SIGTERM is a clean stop for the supervisor, so that handler just returns.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    if failures:
        log.error("exiting: %s", failures[0])
        return 1
    return 0
