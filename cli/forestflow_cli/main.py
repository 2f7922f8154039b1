"""ffctl: deploy models and drive the local platform."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from forestflow_cli.client import ApiError, Client
from forestflow_cli.model_files import example_input, read_model_file
from forestflow_control_plane.platforms.local.launcher import Launcher, LaunchError

app = typer.Typer(help="ForestFlow: serverless, policy-driven model serving.", no_args_is_help=True)
get_app = typer.Typer(help="List contracts.", no_args_is_help=True)
app.add_typer(get_app, name="get")
out = Console()
err = Console(stderr=True)

ServerOption = Annotated[
    str | None,
    typer.Option("--server", envvar="FF_SERVER", help="Control-plane API URL."),
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="FF_TOKEN", help="API bearer token.")
]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="table or json.")]

DEFAULT_SERVER = "http://127.0.0.1:8081"
JOB_POLL_S = 0.1


def run() -> None:
    app()


@app.command()
def up(
    api_port: Annotated[int | None, typer.Option(help="API port (default 8081).")] = None,
    gateway_port: Annotated[int | None, typer.Option(help="Gateway port (default 8080).")] = None,
) -> None:
    """Start the local platform: Redis (embedded unless REDIS_URL is set), API, worker, gateway."""
    launcher = Launcher()
    try:
        settings = launcher.up(api_port=api_port, gateway_port=gateway_port)
    except LaunchError as exc:
        err.print(f"[red]ffctl up failed:[/red] {exc}")
        raise typer.Exit(1) from None
    out.print(f"ForestFlow is up  (state: {settings.home})")
    out.print(f"  API      {settings.api_url}  (docs: {settings.api_url}/docs)")
    out.print(f"  gateway  {settings.gateway_url}")
    out.print(f"  redis    {settings.redis_url}")
    if launcher.admin_token():
        out.print(f"  token    {launcher.tokens_file} (admin; ffctl uses it)")


@app.command()
def down() -> None:
    """Stop every process the local platform started."""
    stopped = Launcher().down()
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status() -> None:
    """Say whether the local platform is up, and where."""
    settings = Launcher().running()
    if settings is None:
        out.print("ForestFlow is down")
        raise typer.Exit(1)
    out.print(f"ForestFlow is up: API {settings.api_url}, gateway {settings.gateway_url}")


@app.command()
def deploy(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="model.yaml")],
    wait: Annotated[bool, typer.Option(help="Wait for the rollout to finish.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 600.0,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Register the variant a model.yaml describes and roll it out."""
    with _api(server, token) as client:
        result = client.deploy(read_model_file(file))
        variant = f"{result['contract']}@{result['version']}"
        out.print(f"deployed {variant} (rollout job {result['job']})")
        if wait:
            deadline = time.monotonic() + timeout
            job = _wait_job(client, result["job"], deadline)
            if job["status"] != "finished":
                err.print(f"[red]rollout {job['status']}:[/red] {job.get('error') or ''}")
                raise typer.Exit(1)
            contract = client.contract(result["contract"])
            states = {v["version"]: v["state"] for v in contract["variants"]}
            if states.get(result["version"]) == "shadow":
                out.print(f"{variant} runs as a shadow: mirrored traffic only")
            elif _wait_rollout(client, result["contract"], result["version"], deadline) != (
                "succeeded"
            ):
                raise typer.Exit(1)
        contract = client.contract(result["contract"])
    name = result["contract"].split("/", 1)[1]
    url = f"{result['url']}/v1/{name}/predict"
    body = json.dumps({"input": example_input(contract)})
    out.print(f"inference URL: {url}")
    out.print(
        f"curl -s -X POST {url} -H 'content-type: application/json' -d {shlex.quote(body)}",
        soft_wrap=True, highlight=False, markup=False,
    )


@get_app.command("contracts")
def get_contracts(
    server: ServerOption = None, token: TokenOption = None, output: OutputOption = "table"
) -> None:
    """List contracts with their variants and traffic."""
    with _api(server, token) as client:
        rows = [client.contract(name) for name in client.contracts()]
    if output == "json":
        out.print_json(json.dumps(rows))
        return
    table = Table("CONTRACT", "VARIANTS", "TRAFFIC", "URL")
    for row in rows:
        states = ", ".join(f"{v['version']} ({v['state']})" for v in row["variants"])
        table.add_row(row["name"], states, _percents(row["traffic"]), row["url"])
    out.print(table)


@app.command()
def traffic(
    contract: Annotated[str, typer.Argument(help="namespace/name")],
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Show a contract's traffic split."""
    with _api(server, token) as client:
        out.print(_percents(client.traffic(contract)["traffic"]))


def _act(action: str) -> Callable[..., None]:
    def command(
        contract: Annotated[str, typer.Argument(help="namespace/name")],
        server: ServerOption = None,
        token: TokenOption = None,
    ) -> None:
        with _api(server, token) as client:
            result = client.act(contract, action)
        progress = (result["rollout"] or {}).get("progress", {})
        out.print(f"{contract}: rollout of {progress.get('candidate')} {progress.get('status')}")
        out.print(f"traffic: {_percents(result['traffic'])}")

    command.__doc__ = ACTIONS[action]
    return command


ACTIONS = {
    "promote": "Skip the remaining steps: the new variant takes 100 %.",
    "pause": "Hold the rollout at its current split.",
    "resume": "Continue a paused rollout from its step.",
    "rollback": "Restore exactly the split before the rollout; the new variant fails.",
    "abort": "Like rollback, recorded as aborted.",
}
for _name in ACTIONS:
    app.command(_name)(_act(_name))


@app.command()
def events(
    contract: Annotated[str, typer.Argument(help="namespace/name")],
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = "table",
) -> None:
    """The contract's audit log: who changed what, when."""
    with _api(server, token) as client:
        rows = client.events(contract)
    if output == "json":
        out.print_json(json.dumps(rows))
        return
    table = Table("WHEN", "WHO", "WHAT", "TRAFFIC AFTER")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["when"]))
        table.add_row(when, row["who"], row["what"], _percents(row["after"].get("traffic", {})))
    out.print(table)


@contextlib.contextmanager
def _api(server: str | None, token: str | None) -> Iterator[Client]:
    """A Client for one command; API and connection errors become messages and exit codes."""
    client = Client(server or _default_server(), token or _default_token())
    try:
        yield client
    except ApiError as exc:
        err.print(f"[red]error ({exc.status}):[/red] {exc.detail}")
        for line in str(exc).splitlines() if exc.errors else []:
            err.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except httpx.TransportError as exc:
        err.print(f"[red]cannot reach the API:[/red] {exc} (is `ffctl up` running?)")
        raise typer.Exit(3) from None
    finally:
        client.close()


def _default_server() -> str:
    if os.environ.get("FF_SERVER"):
        return os.environ["FF_SERVER"]
    settings = Launcher().running()
    return settings.api_url if settings else DEFAULT_SERVER


def _default_token() -> str | None:
    """The running local platform's generated admin token, when no token was given."""
    return Launcher().admin_token() if Launcher().running() else None


def _wait_job(client: Client, job_id: str, deadline: float) -> dict[str, Any]:
    while True:
        job = client.job(job_id)
        if job["status"] in ("finished", "failed", "stopped", "canceled"):
            return job
        if time.monotonic() > deadline:
            return {**job, "status": "timed out", "error": f"still {job['status']}"}
        time.sleep(JOB_POLL_S)


def _wait_rollout(client: Client, contract: str, version: str, deadline: float) -> str:
    """Follow the rollout, printing each new split; its final status (or `timed out`)."""
    shown: dict[str, int] | None = None
    while True:
        view = client.rollout(contract)
        rollout = view["rollout"] or {}
        progress = rollout.get("progress", {})
        if view["traffic"] != shown:
            shown = view["traffic"]
            out.print(f"traffic: {_percents(view['traffic'])}")
        if rollout.get("candidate") != version:
            err.print(f"[red]rollout of {version} was superseded[/red]")
            return "superseded"
        status = str(progress.get("status", "running"))
        if status not in ("running", "paused"):
            if status != "succeeded":
                err.print(f"[red]rollout {status}:[/red] {progress.get('reason', '')}")
            return status
        if time.monotonic() > deadline:
            err.print(f"[red]rollout still {status} at the deadline[/red]")
            return "timed out"
        time.sleep(JOB_POLL_S)


def _percents(traffic: dict[str, int]) -> str:
    return ", ".join(f"{v} {p}%" for v, p in traffic.items()) or "(none)"
