"""`ffctl logs CONTRACT`: the tail of the contract's payload log (the request/response
events its runtimes sample, see `payload_logging`), and with `--follow` what comes next."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
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
    event, until an interrupt (SIGINT) ends it with exit code 0."""
    with api(server, token) as client:
        if not follow:
            page = client.payloads(contract, count, variant)
            emit(page, output, lambda p: events_table(p["events"]))
            return
        with contextlib.suppress(KeyboardInterrupt), interruptible():
            _follow(client, contract, variant, count, output)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt while the block runs, even where it was inherited
    ignored (a script's `ffctl logs -f &`: POSIX shells start background jobs so), since an
    interrupt is the one way a follow ends. Python keeps an inherited SIG_IGN, which left
    such a follower running for good."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _follow(
    client: Client, contract: str, variant: str | None, count: int, output: Format
) -> None:
    page = client.payloads(contract, count, variant)
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
