"""Read commands: `get contracts|variants`, `traffic`, `events`. Each prints the API's data
as a table, or unchanged as JSON or YAML (`-o`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from forestflow_cli.options import ContractArg, Output, Server, Token, contract_name
from forestflow_cli.output import Format, add_row, emit, percents, when
from forestflow_cli.session import api

OptionalContract = Annotated[
    str | None,
    typer.Argument(
        help="One contract, namespace/name; all when left out.",
        callback=lambda v: None if v is None else contract_name(v),
        show_default=False,
    ),
]


def get_contracts(
    contract: OptionalContract = None,
    server: Server = None,
    token: Token = None,
    output: Output = Format.TABLE,
) -> None:
    """List contracts with their variants, traffic and rollout.

    json / yaml: a list of the API's contract objects; the object itself with CONTRACT."""
    with api(server, token) as client:
        if contract is not None:
            one = client.contract(contract)
            emit(one, output, lambda c: contracts_table([c]))
            return
        rows = [client.contract(name) for name in client.contracts()]
    emit(rows, output, contracts_table)


def get_variants(
    contract: OptionalContract = None,
    server: Server = None,
    token: Token = None,
    output: Output = Format.TABLE,
) -> None:
    """List variants: state, traffic, revision, artifact.

    json / yaml: the API's {contract, variants}; a list of them without CONTRACT."""
    with api(server, token) as client:
        if contract is not None:
            body = client.variants(contract)
            traffic = client.traffic(contract)["traffic"]
            emit(body, output, lambda b: variants_table([b], {contract: traffic}))
            return
        names = client.contracts()
        bodies = [client.variants(name) for name in names]
        traffic = {name: client.traffic(name)["traffic"] for name in names}
    emit(bodies, output, lambda b: variants_table(b, traffic))


def traffic(
    contract: ContractArg, server: Server = None, token: Token = None, output: Output = Format.TABLE
) -> None:
    """Show a contract's traffic split."""
    with api(server, token) as client:
        body = client.traffic(contract)
    emit(body, output, lambda b: percents(b["traffic"]))


def events(
    contract: ContractArg, server: Server = None, token: Token = None, output: Output = Format.TABLE
) -> None:
    """The contract's audit log: who changed what, when."""
    with api(server, token) as client:
        rows = client.events(contract)
    emit({"events": rows}, output, lambda b: events_table(b["events"]))


def contracts_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("CONTRACT", "VARIANTS", "TRAFFIC", "ROLLOUT", "URL")
    for row in rows:
        states = ", ".join(f"{v['version']} ({v['state']})" for v in row["variants"])
        add_row(table, row["name"], states, percents(row["traffic"]), rollout_cell(row), row["url"])
    return table


def rollout_cell(contract: dict[str, Any]) -> str:
    record = contract.get("rollout")
    if record is None:
        return "-"
    return f"{record['candidate']} {record['progress']['status']}"


def variants_table(bodies: list[dict[str, Any]], traffic: dict[str, dict[str, int]]) -> Table:
    table = Table("CONTRACT", "VERSION", "STATE", "TRAFFIC", "REVISION", "MODEL", "CREATED",
                  "REASON")
    for body in bodies:
        split = traffic.get(body["contract"], {})
        for v in body["variants"]:
            add_row(table, *variant_row(v, split), v["reason"])
    return table


def variant_row(variant: dict[str, Any], split: dict[str, int]) -> tuple[str, ...]:
    spec = variant["spec"]
    share = split.get(variant["version"])
    return (
        variant["contract"],
        variant["version"],
        variant["state"],
        "-" if share is None else f"{share}%",
        str(spec.get("revision", 1)),
        f"{spec['model']['format']} {spec['model']['uri']}",
        when(variant["created_at"]),
    )


def events_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("WHEN", "WHO", "WHAT", "TRAFFIC AFTER")
    for row in rows:
        after = row["after"] or {}
        add_row(
            table, when(row["when"]), row["who"], row["what"], percents(after.get("traffic", {}))
        )
    return table
