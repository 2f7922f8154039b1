"""`ffctl shadow report`: how each shadow's answers compare with the primaries' on the
requests the mirror replayed to it."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from forestflow_cli.options import ContractArg, Output, Server, Token
from forestflow_cli.output import Format, add_row, emit
from forestflow_cli.session import api

shadow_app = typer.Typer(help="Shadow variants: mirrored traffic only.", no_args_is_help=True)


@shadow_app.command("report")
def report(
    contract: ContractArg, server: Server = None, token: Token = None, output: Output = Format.TABLE
) -> None:
    """Agreement, output differences, errors and latency of each shadow vs the primaries.

    JSON and YAML print the API's `{contract, shadows}` unchanged."""
    with api(server, token) as client:
        body = client.shadows(contract)
    emit(body, output, lambda b: report_table(b["shadows"]))


def report_table(shadows: list[dict[str, Any]]) -> Table:
    table = Table(
        "SHADOW", "VS", "AGREEMENT", "MAX |DIFF|", "MEAN |DIFF|", "ERRORS", "P50 MS", "P95 MS",
        caption="latency: primary / shadow" if shadows else "no shadows",
    )
    for row in shadows:
        latency = row["latency_ms"]
        add_row(
            table,
            row["version"],
            ", ".join(row["primary_versions"]) or "-",
            _agreement(row),
            _number(row["max_abs_diff"]),
            _number(row["mean_abs_diff"]),
            str(row["errors"]),
            f"{_number(latency['primary']['p50'])} / {_number(latency['shadow']['p50'])}",
            f"{_number(latency['primary']['p95'])} / {_number(latency['shadow']['p95'])}",
        )
    return table


def _agreement(row: dict[str, Any]) -> str:
    if row["agreement"] is None:
        return "-"
    return f"{row['agreement']:.1%} ({row['agreed']}/{row['compared']})"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
