"""`ffctl config set|unset|view`: the config file, and where each setting comes from."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.table import Table

from forestflow_cli.config import KEYS, ConfigError, config_path, write_setting
from forestflow_cli.exit_codes import ExitCode, fail
from forestflow_cli.options import Gateway, Output, Server, Token
from forestflow_cli.output import Format, add_row, emit, out
from forestflow_cli.session import configured

Key = Annotated[str, typer.Argument(help=f"One of {', '.join(KEYS)}.")]


def set_key(key: Key, value: Annotated[str, typer.Argument(help="Its value.")]) -> None:
    """Write a setting to the config file (mode 0600: it may hold a token)."""
    _write(key, value)
    out.print(f"{key} set in {config_path(os.environ)}", highlight=False)


def unset_key(key: Key) -> None:
    """Remove a setting from the config file."""
    _write(key, None)
    out.print(f"{key} removed from {config_path(os.environ)}", highlight=False)


def view(
    server: Server = None, token: Token = None, gateway: Gateway = None,
    output: Output = Format.TABLE,
) -> None:
    """The settings ffctl would use, and where each comes from.

    Sources, first wins: flag, env (FF_SERVER, FF_GATEWAY, FF_TOKEN), file, local (the
    platform `ffctl up` started), default. The token is masked."""
    config = configured(server, token, gateway)
    data: dict[str, Any] = {"file": str(config_path(os.environ))}
    for key, setting in config.as_dict().items():
        value = _mask(setting.value) if key == "token" else setting.value
        data[key] = {"value": value, "source": setting.source or None}
    emit(data, output, _table)


def _write(key: str, value: str | None) -> None:
    try:
        write_setting(config_path(os.environ), key, value)
    except ConfigError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)


def _mask(token: str | None) -> str | None:
    return None if token is None else f"(set, {len(token)} characters)"


def _table(data: dict[str, Any]) -> Table:
    table = Table("SETTING", "VALUE", "FROM", caption=f"config file: {data['file']}")
    for key in KEYS:
        add_row(table, key, data[key]["value"] or "-", data[key]["source"] or "-")
    return table
