"""`ffctl describe CONTRACT`: the contract's spec, its variants, its current rollout with the
gate's last verdict, and its last events, on one page."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from forestflow_cli.options import ContractArg, Output, Server, Token
from forestflow_cli.output import Format, add_row, emit, percents, when
from forestflow_cli.progress import progress_table, rollout_view
from forestflow_cli.reads import events_table, variant_row
from forestflow_cli.session import api

EventCount = Annotated[int, typer.Option("--events", min=0, help="How many of the last events.")]


def describe(
    contract: ContractArg,
    events: EventCount = 10,
    server: Server = None,
    token: Token = None,
    output: Output = Format.TABLE,
) -> None:
    """Everything about one contract: spec, variants, rollout and gate, last events.

    json / yaml: {contract, events}, the API's contract object and its last events."""
    with api(server, token) as client:
        body = client.contract(contract)
        log = client.events(contract)
    data = {"contract": body, "events": log[len(log) - events :] if events else []}
    emit(data, output, page)


def page(data: dict[str, Any]) -> RenderableType:
    contract = data["contract"]
    spec = contract["spec"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    add_row(head, "contract", contract["name"])
    add_row(head, "url", contract["url"])
    updated = when(contract["updated_at"])
    add_row(head, "generation", f"{contract['generation']} (updated {updated})")
    add_row(head, "inputs", tensors(spec.get("inputs", [])))
    add_row(head, "outputs", tensors(spec.get("outputs", [])))
    add_row(head, "traffic", percents(contract["traffic"]))
    parts: list[RenderableType] = [head, _title("Variants"), variants(contract)]
    parts += [_title("Rollout"), rollout(contract)]
    parts += [_title("Events"), events_table(data["events"])]
    return Group(*parts)


def tensors(specs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in specs) or "-"


def variants(contract: dict[str, Any]) -> Table:
    table = Table("VERSION", "STATE", "TRAFFIC", "REVISION", "MODEL", "CREATED", "DEVICE",
                  "REASON")
    for v in contract["variants"]:
        _, *cells = variant_row(v, contract["traffic"])
        add_row(table, *cells, v["spec"].get("device", ""), v["reason"])
    return table


def rollout(contract: dict[str, Any]) -> RenderableType:
    view = rollout_view(contract["traffic"], contract["rollout"])
    return Text("none") if view is None else progress_table(view)


def _title(text: str) -> Text:
    return Text(f"\n{text}", style="bold underline")
