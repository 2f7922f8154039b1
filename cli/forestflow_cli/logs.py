"""`ffctl logs CONTRACT`: the tail of the contract's payload log (the request/response
events its runtimes sample, see `payload_logging`), and with `--follow` what comes next."""

from __future__ import annotations

import contextlib
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from forestflow_cli.client import Client
from forestflow_cli.options import ContractArg, Output, Server, Token
from forestflow_cli.output import Format, add_row, emit, emit_stream_item
from forestflow_cli.session import api

FOLLOW_POLL_S = 0.5
PAGE = 200
DATA_SHOWN = 6

Variant = Annotated[
    str | None, typer.Option("--variant", help="Only this version's events.", show_default=False)
]
Count = Annotated[int, typer.Option("--count", "-n", min=1, max=1000, help="Events to show.")]
Follow = Annotated[
    bool,
    typer.Option(
        "--follow", "-f", help="Keep printing new events until interrupted (json: one object "
        "per line; yaml: one document per event).",
    ),
]


def logs(
    contract: ContractArg,
    variant: Variant = None,
    count: Count = 20,
    follow: Follow = False,
    server: Server = None,
    token: Token = None,
    output: Output = Format.TABLE,
) -> None:
    """The contract's sampled request/response events (payload log), oldest first.

    json / yaml: the API's page {contract, events, cursor}; with --follow, one object per
    event."""
    with api(server, token) as client:
        page = client.payloads(contract, count, variant)
        if not follow:
            emit(page, output, lambda p: events_table(p["events"]))
            return
        with contextlib.suppress(KeyboardInterrupt):
            _follow(client, contract, variant, page, output)


def _follow(
    client: Client, contract: str, variant: str | None, page: dict[str, Any], output: Format
) -> None:
    while True:
        for event in page["events"]:
            emit_stream_item(event, output, event_line)
        if len(page["events"]) < PAGE:
            time.sleep(FOLLOW_POLL_S)
        page = client.payloads(contract, PAGE, variant, after=page["cursor"])


def events_table(events: list[dict[str, Any]]) -> Table:
    table = Table("TIME", "VARIANT", "REQUEST", "LATENCY", "INPUTS", "OUTPUTS")
    for event in events:
        add_row(
            table, _time(event["time"]), event["variant"], event["request_id"],
            f"{event['latency_ms']:.1f} ms", tensors(event["inputs"]), tensors(event["outputs"]),
        )
    return table


def event_line(event: dict[str, Any]) -> str:
    return "  ".join((
        _time(event["time"]), event["variant"], event["request_id"],
        f"{event['latency_ms']:.1f} ms", f"in {tensors(event['inputs'])}",
        f"out {tensors(event['outputs'])}",
    ))


def tensors(named: dict[str, dict[str, Any]]) -> str:
    """`name [shape] first values…` per tensor."""
    parts = []
    for name, tensor in named.items():
        data = tensor["data"]
        shown = ", ".join(_number(x) for x in data[:DATA_SHOWN])
        more = ", …" if len(data) > DATA_SHOWN else ""
        parts.append(f"{name} {tensor['shape']} [{shown}{more}]")
    return "; ".join(parts)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _time(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}"
