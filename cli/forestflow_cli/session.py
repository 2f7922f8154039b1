"""One API session per command: the configured Client, with every way a call can fail
turned into a message on stderr and its exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from forestflow_cli.client import ApiError, Client
from forestflow_cli.config import Config, ConfigError, load
from forestflow_cli.exit_codes import ExitCode, fail

# 401/403: the token; 5xx: the server. Every other refusal is about the input.
UNREACHABLE_STATUSES = frozenset({401, 403})


@contextlib.contextmanager
def api(server: str | None, token: str | None) -> Iterator[Client]:
    config = configured(server, token)
    assert config.server.value is not None
    client = Client(config.server.value, config.token.value)
    try:
        yield client
    except ApiError as exc:
        unreachable = exc.status in UNREACHABLE_STATUSES or exc.status >= 500
        code = ExitCode.UNREACHABLE if unreachable else ExitCode.BAD_INPUT
        fail(f"({exc.status}) {exc.detail}", code, str(exc).splitlines() if exc.errors else [])
    except httpx.TransportError as exc:
        hint = " (is `ffctl up` running?)" if config.server.source in ("local", "default") else ""
        fail(f"cannot reach the API at {config.server.value}: {exc}{hint}", ExitCode.UNREACHABLE)
    finally:
        client.close()


def configured(
    server: str | None = None, token: str | None = None, gateway: str | None = None
) -> Config:
    try:
        return load(server=server, token=token, gateway=gateway)
    except ConfigError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
