"""ffctl's exit codes, the contract a CI pipeline relies on, and the one way to leave with one."""

from __future__ import annotations

from enum import IntEnum
from typing import NoReturn

import typer
from rich.markup import escape

from forestflow_cli.output import err


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    UNREACHABLE = 3


EXIT_CODES_HELP = "\n\n".join((
    "Exit codes:",
    "0 ok;",
    "1 failed: the rollout failed its gate, was rolled back, aborted, superseded or timed "
    "out; a model's server error;",
    "2 bad input: invalid model.yaml or arguments, unknown contract or variant, a change the "
    "API refuses (conflict);",
    "3 cannot reach the API or gateway, the API failed (5xx), or the token was refused.",
))


def fail(message: str, code: ExitCode, details: list[str] | None = None) -> NoReturn:
    """Say what went wrong on stderr (stdout stays machine-readable) and exit with `code`."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    for line in details or []:
        err.print(f"  {line}", markup=False, highlight=False)
    raise typer.Exit(code)
