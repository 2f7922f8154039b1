"""ffctl: deploy models, watch and steer their rollouts, call them, and run the local
platform. Each command lives in the module of its concern; this one only assembles them."""

from __future__ import annotations

from collections.abc import Callable

import typer

from forestflow_cli import (
    actions,
    config_commands,
    deploy,
    describe,
    logs,
    platform,
    predict,
    reads,
)
from forestflow_cli.exit_codes import EXIT_CODES_HELP
from forestflow_cli.shadow import shadow_app

app = typer.Typer(
    help="ForestFlow: serverless, policy-driven model serving.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
)


def _group(name: str, help: str) -> typer.Typer:
    group = typer.Typer(help=help, epilog=EXIT_CODES_HELP, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def _command(target: typer.Typer, function: Callable[..., None], name: str | None = None) -> None:
    target.command(name, epilog=EXIT_CODES_HELP)(function)


for _function in (platform.up, platform.down, platform.status, deploy.deploy, describe.describe,
                  reads.traffic, reads.events, logs.logs, predict.predict):
    _command(app, _function)
for _name in actions.ACTIONS:
    _command(app, actions.action(_name), _name)

get_app = _group("get", "List contracts or variants.")
_command(get_app, reads.get_contracts, "contracts")
_command(get_app, reads.get_variants, "variants")

delete_app = _group("delete", "Delete a contract or retire a variant.")
_command(delete_app, actions.delete_contract, "contract")
_command(delete_app, actions.delete_variant, "variant")

config_app = _group("config", "Where ffctl finds the API, the gateway and its token.")
_command(config_app, config_commands.set_key, "set")
_command(config_app, config_commands.unset_key, "unset")
_command(config_app, config_commands.view, "view")

app.add_typer(shadow_app, name="shadow", epilog=EXIT_CODES_HELP)


def run() -> None:
    app()
