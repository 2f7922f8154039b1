"""Where ffctl finds the API, gateway and token: flag > env > config file > the local
platform's state file > the default; and `ffctl config set|unset|view`."""

from __future__ import annotations

import json
import stat
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from forestflow_cli.config import Config, LocalPlatform, Setting, resolve
from forestflow_control_plane.settings import Settings
from tests.support import free_port

from .conftest import ADMIN, Ffctl

LOCAL = LocalPlatform("http://127.0.0.1:9001", "http://127.0.0.1:9000", "local-token")


@pytest.mark.parametrize(
    ("name", "flags", "env", "file", "local", "want"),
    [
        ("flag wins", {"server": "http://flag", "token": "t-flag"},
         {"FF_SERVER": "http://env", "FF_TOKEN": "t-env"}, {"server": "http://file"}, LOCAL,
         ("http://flag", "flag", None, "", "t-flag", "flag")),
        ("env over file", {}, {"FF_SERVER": "http://env", "FF_GATEWAY": "http://gw-env"},
         {"server": "http://file", "token": "t-file", "gateway": "http://gw-file"}, None,
         ("http://env", "env", "http://gw-env", "env", "t-file", "file")),
        ("file over local", {}, {}, {"server": "http://file"}, LOCAL,
         ("http://file", "file", None, "", None, "")),
        ("local platform", {}, {}, {}, LOCAL,
         (LOCAL.api_url, "local", LOCAL.gateway_url, "local", "local-token", "local")),
        ("a token of its own for the local API", {"token": "mine"}, {}, {}, LOCAL,
         (LOCAL.api_url, "local", LOCAL.gateway_url, "local", "mine", "flag")),
        ("the local token never goes elsewhere", {}, {"FF_SERVER": "http://remote"}, {}, LOCAL,
         ("http://remote", "env", None, "", None, "")),
        ("the file naming the local API", {}, {}, {"server": LOCAL.api_url}, LOCAL,
         (LOCAL.api_url, "file", LOCAL.gateway_url, "local", "local-token", "local")),
        ("nothing at all", {}, {}, {}, None,
         ("http://127.0.0.1:8081", "default", None, "", None, "")),
        ("empty values count as unset", {"server": ""}, {"FF_SERVER": ""}, {}, None,
         ("http://127.0.0.1:8081", "default", None, "", None, "")),
    ],
)
def test_each_setting_comes_from_the_first_place_that_has_it(
    name: str,
    flags: dict[str, str | None],
    env: dict[str, str],
    file: dict[str, str],
    local: LocalPlatform | None,
    want: tuple[str, str, str | None, str, str | None, str],
) -> None:
    server, server_from, gateway, gateway_from, token, token_from = want
    assert resolve(flags, env, file, lambda: local) == Config(
        Setting(server, server_from), Setting(gateway, gateway_from), Setting(token, token_from)
    ), name


def test_the_local_platform_is_not_looked_up_when_everything_is_given() -> None:
    def local() -> LocalPlatform:
        raise AssertionError("looked up")

    flags = {"server": "http://s", "gateway": "http://g", "token": "t"}
    assert resolve(flags, {}, {}, local).server == Setting("http://s", "flag")


def config_file(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "config" / "forestflow" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


def test_flag_over_env_over_file_against_a_real_api(
    ffctl: Ffctl, api_url: str, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config_file(tmp_path, server=api_url, token=ADMIN)
    listed = ["get", "contracts", "-o", "json"]
    assert ffctl(*listed).stdout == "[]\n"  # the file alone
    assert ffctl(*listed, env={"FF_SERVER": dead}).exit_code == 3  # env over file
    assert ffctl(*listed, "--server", api_url, env={"FF_SERVER": dead}).exit_code == 0
    assert ffctl(*listed, env={"FF_TOKEN": "not-a-known-token-at-all"}).exit_code == 3
    again = ffctl(*listed, "--token", ADMIN, env={"FF_TOKEN": "not-a-known-token-at-all"})
    assert again.exit_code == 0


def test_with_nothing_configured_the_local_platforms_state_file_is_used(
    ffctl: Ffctl, api_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "ff"
    home.mkdir()
    port = urlparse(api_url).port
    assert port is not None
    state = asdict(Settings(home=home, redis_url="redis://unused", api_port=port))
    (home / "platform.json").write_text(json.dumps({**state, "home": str(home)}))
    tokens = {"tokens": [{"name": "local-admin", "role": "admin", "token": ADMIN}]}
    (home / "tokens.yaml").write_text(yaml.safe_dump(tokens))
    assert ffctl("get", "contracts", "-o", "json").stdout == "[]\n"
    view = json.loads(ffctl("config", "view", "-o", "json").stdout)
    assert view["server"] == {"value": api_url, "source": "local"}
    assert view["token"]["source"] == "local" and ADMIN not in json.dumps(view)
    assert ffctl("get", "contracts", env={"FF_SERVER": api_url + "/"}).exit_code == 0
    other_name = api_url.replace("127.0.0.1", "localhost")
    elsewhere = ffctl("get", "contracts", env={"FF_SERVER": other_name})
    assert elsewhere.exit_code == 3  # another URL: the local token is not sent
    assert "(401)" in elsewhere.stderr


def test_config_set_unset_and_view(ffctl: Ffctl, tmp_path: Path) -> None:
    path = tmp_path / "config" / "forestflow" / "config.yaml"
    assert ffctl("config", "set", "server", "http://api.example:8081").exit_code == 0
    assert ffctl("config", "set", "token", "secret-token-0123456789").exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text()) == {
        "server": "http://api.example:8081", "token": "secret-token-0123456789"
    }
    view = ffctl("config", "view", "-o", "json", env={"FF_GATEWAY": "http://gw.example"})
    assert json.loads(view.stdout) == {
        "file": str(path),
        "server": {"value": "http://api.example:8081", "source": "file"},
        "gateway": {"value": "http://gw.example", "source": "env"},
        "token": {"value": "(set, 23 characters)", "source": "file"},
    }
    table = ffctl("config", "view").stdout
    assert "http://api.example:8081" in table and "secret" not in table
    assert ffctl("config", "unset", "token").exit_code == 0
    assert yaml.safe_load(path.read_text()) == {"server": "http://api.example:8081"}
    refused = ffctl("config", "set", "sever", "http://x")
    assert refused.exit_code == 2
    assert "'sever' is not one of server, gateway, token" in refused.stderr
