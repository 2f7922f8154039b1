"""How read commands print: a Rich table for people, or the API's data unchanged as JSON or
YAML for programs. In json and yaml nothing else reaches stdout; messages go to stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

out = Console()
err = Console(stderr=True)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def emit(data: Any, fmt: Format, table: Callable[[Any], RenderableType]) -> None:
    """Print `data` as `fmt`; `table` renders it for people."""
    if fmt is Format.TABLE:
        out.print(table(data))
    else:
        write(dump(data, fmt))


def dump(data: Any, fmt: Format) -> str:
    if fmt is Format.JSON:
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def emit_stream_item(data: Any, fmt: Format, line: Callable[[Any], str]) -> None:
    """One item of an unbounded stream (`logs --follow`): a line of text, a JSON line, or a
    YAML document."""
    if fmt is Format.JSON:
        write(json.dumps(data) + "\n")
    elif fmt is Format.YAML:
        write("---\n" + dump(data, fmt))
    else:
        out.print(line(data), markup=False, highlight=False, soft_wrap=True)


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def percents(traffic: dict[str, int]) -> str:
    """`v2 70%, v1 30%`: the largest share first, ties by version."""
    ordered = sorted(traffic.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{v} {p}%" for v, p in ordered) or "(none)"


def when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def add_row(table: Table, *cells: str) -> None:
    """Cells are data, never Rich markup: a `[...]` in a name or a value prints as it is."""
    table.add_row(*(Text(cell) for cell in cells))
