"""Bearer tokens for the API: a read-only and an admin role.

Tokens come from a YAML file (`FF_TOKENS_FILE`: `tokens: [{name, role, token}]`) and/or
`FF_ADMIN_TOKEN` / `FF_READ_TOKEN`. A presented token is compared with every known one in
constant time, so neither a match nor its position leaks through timing.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

from forestflow_control_plane.settings import SettingsError

MIN_TOKEN_LENGTH = 16


class Role(StrEnum):
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


@dataclass(frozen=True)
class Tokens:
    entries: tuple[tuple[bytes, Principal], ...]

    def principal(self, token: str) -> Principal | None:
        presented = token.encode()
        found = None
        for known, principal in self.entries:
            if hmac.compare_digest(known, presented):
                found = principal
        return found


def load_tokens(environ: Mapping[str, str]) -> Tokens:
    entries: list[tuple[str, str, str]] = []
    path = environ.get("FF_TOKENS_FILE")
    if path:
        entries += _read_file(Path(path))
    if environ.get("FF_ADMIN_TOKEN"):
        entries.append(("admin", Role.ADMIN, environ["FF_ADMIN_TOKEN"]))
    if environ.get("FF_READ_TOKEN"):
        entries.append(("reader", Role.READ, environ["FF_READ_TOKEN"]))
    if not entries:
        raise SettingsError("no API tokens: set FF_TOKENS_FILE or FF_ADMIN_TOKEN")
    for name, _, token in entries:
        if len(token) < MIN_TOKEN_LENGTH:
            raise SettingsError(f"token of {name!r}: shorter than {MIN_TOKEN_LENGTH} characters")
    return Tokens(tuple((t.encode(), Principal(n, Role(r))) for n, r, t in entries))


def write_admin_token(path: Path) -> str:
    """Create a tokens file with one fresh admin token (mode 0600) unless it exists."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump({"tokens": [{"name": "local-admin", "role": "admin",
                                                    "token": token}]}))
    return admin_token(path)


def admin_token(path: Path) -> str:
    for _, role, token in _read_file(path):
        if role == Role.ADMIN:
            return token
    raise SettingsError(f"FF_TOKENS_FILE {path}: no admin token")


def _read_file(path: Path) -> list[tuple[str, str, str]]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"FF_TOKENS_FILE {path}: {exc}") from None
    rows = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise SettingsError(f"FF_TOKENS_FILE {path}: expected `tokens: [{{name, role, token}}]`")
    entries = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not {"name", "role", "token"} <= row.keys():
            raise SettingsError(f"FF_TOKENS_FILE {path}: tokens[{i}] needs name, role, token")
        if row["role"] not in tuple(Role):
            raise SettingsError(f"FF_TOKENS_FILE {path}: tokens[{i}].role: read or admin")
        entries.append((str(row["name"]), str(row["role"]), str(row["token"])))
    return entries
