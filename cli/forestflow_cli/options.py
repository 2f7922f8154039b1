"""The arguments and options commands share, declared once."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from forestflow_cli.output import Format

CONTRACT_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?/[a-z]([-a-z0-9]{0,30}[a-z0-9])?$")


def contract_name(value: str) -> str:
    if not CONTRACT_NAME.match(value):
        raise typer.BadParameter(f"expected namespace/name (e.g. fraud/scoring), got {value!r}")
    return value


ContractArg = Annotated[
    str, typer.Argument(help="The contract, namespace/name.", callback=contract_name)
]
Server = Annotated[
    str | None,
    typer.Option(
        "--server", help="Control-plane API URL. Default: FF_SERVER, the config file, then "
        "the local platform.", show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", help="API bearer token. Default: FF_TOKEN, the config file, then the local "
        "platform's own.", show_default=False,
    ),
]
Gateway = Annotated[
    str | None,
    typer.Option(
        "--gateway", help="Gateway URL. Default: FF_GATEWAY, the config file, the local "
        "platform, then the URL the API gives the contract.", show_default=False,
    ),
]
Output = Annotated[
    Format,
    typer.Option("--output", "-o", help="table, or json / yaml: the API's data unchanged."),
]
