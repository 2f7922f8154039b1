"""The local platform's lifecycle: `ffctl up`, `down`, `status`, through the local launcher."""

from __future__ import annotations

from typing import Annotated

import typer

from forestflow_cli.exit_codes import ExitCode, fail
from forestflow_cli.options import Output
from forestflow_cli.output import Format, emit, out
from forestflow_control_plane.platforms.local.launcher import Launcher, LaunchError


def up(
    api_port: Annotated[int | None, typer.Option(help="API port (default 8081).")] = None,
    gateway_port: Annotated[int | None, typer.Option(help="Gateway port (default 8080).")] = None,
) -> None:
    """Start the local platform: Redis (embedded unless REDIS_URL is set), API, worker, gateway.

    Run again, it restarts only what died."""
    launcher = Launcher()
    try:
        settings = launcher.up(api_port=api_port, gateway_port=gateway_port)
    except LaunchError as exc:
        fail(f"ffctl up failed: {exc}", ExitCode.FAILED)
    out.print(f"ForestFlow is up  (state: {settings.home})", highlight=False)
    out.print(f"  API      {settings.api_url}  (docs: {settings.api_url}/docs)", highlight=False)
    out.print(f"  gateway  {settings.gateway_url}", highlight=False)
    out.print(f"  redis    {settings.redis_url}", highlight=False)
    if launcher.admin_token():
        out.print(f"  token    {launcher.tokens_file} (admin; ffctl uses it)", highlight=False)


def down() -> None:
    """Stop every process the local platform started."""
    stopped = Launcher().down()
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def status(output: Output = Format.TABLE) -> None:
    """Say whether the local platform is up, and where.

    Exits 3 when it is down."""
    settings = Launcher().running()
    data = {
        "up": settings is not None,
        "api": settings.api_url if settings else None,
        "gateway": settings.gateway_url if settings else None,
    }
    emit(data, output, lambda d: (
        f"ForestFlow is up: API {d['api']}, gateway {d['gateway']}" if d["up"]
        else "ForestFlow is down"
    ))
    if settings is None:
        raise typer.Exit(ExitCode.UNREACHABLE)
