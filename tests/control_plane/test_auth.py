from __future__ import annotations

from pathlib import Path

import pytest

from forestflow_control_plane.api.auth import Role, admin_token, load_tokens, write_admin_token
from forestflow_control_plane.settings import SettingsError


def test_file_and_environment_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens:\n  - {name: ci, role: read, token: ci-token-0123456789}\n")
    tokens = load_tokens({"FF_TOKENS_FILE": str(path), "FF_ADMIN_TOKEN": "a" * 20})
    ci = tokens.principal("ci-token-0123456789")
    assert ci is not None and (ci.name, ci.role) == ("ci", Role.READ)
    admin = tokens.principal("a" * 20)
    assert admin is not None and admin.role is Role.ADMIN
    assert tokens.principal("a" * 19) is None
    assert tokens.principal("") is None


@pytest.mark.parametrize(
    ("environ", "contents", "message"),
    [
        ({}, None, "no API tokens"),
        ({"FF_ADMIN_TOKEN": "short"}, None, "shorter than"),
        ({}, "tokens: {}", "expected `tokens"),
        ({}, "tokens: [{name: x, role: root, token: xxxxxxxxxxxxxxxxxxxx}]", "role"),
        ({}, "tokens: [{name: x}]", "needs name, role, token"),
    ],
)
def test_bad_token_settings_are_refused(
    tmp_path: Path, environ: dict[str, str], contents: str | None, message: str
) -> None:
    if contents is not None:
        (tmp_path / "t.yaml").write_text(contents)
        environ = {**environ, "FF_TOKENS_FILE": str(tmp_path / "t.yaml")}
    with pytest.raises(SettingsError, match=message):
        load_tokens(environ)


def test_generated_admin_token_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "home" / "tokens.yaml"
    token = write_admin_token(path)
    assert len(token) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert write_admin_token(path) == token == admin_token(path)
