"""Where ffctl finds the API, the gateway and its token: a flag, else the environment
(FF_SERVER, FF_GATEWAY, FF_TOKEN), else the config file
($XDG_CONFIG_HOME/forestflow/config.yaml, default ~/.config/...), else the local platform
`ffctl up` started (its state file), else the local default.

The local platform's generated admin token is only ever sent to that platform's own API.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from forestflow_control_plane.platforms.local.launcher import Launcher
from forestflow_control_plane.settings import SettingsError

KEYS = ("server", "gateway", "token")
ENVIRONMENT = {"server": "FF_SERVER", "gateway": "FF_GATEWAY", "token": "FF_TOKEN"}
DEFAULT_SERVER = "http://127.0.0.1:8081"


class ConfigError(ValueError):
    """The config file or a key given to `ffctl config` is not valid; the message names it."""


@dataclass(frozen=True)
class LocalPlatform:
    """What ffctl needs of the platform `ffctl up` started here."""

    api_url: str
    gateway_url: str
    token: str | None


@dataclass(frozen=True)
class Setting:
    value: str | None
    source: str  # flag, env, file, local, default, or "" when unset


@dataclass(frozen=True)
class Config:
    server: Setting
    gateway: Setting
    token: Setting

    def as_dict(self) -> dict[str, Setting]:
        return {"server": self.server, "gateway": self.gateway, "token": self.token}


def resolve(
    flags: Mapping[str, str | None],
    environ: Mapping[str, str],
    file: Mapping[str, str],
    local: Callable[[], LocalPlatform | None],
) -> Config:
    """Each setting from the first place that has it; `local` is asked only when needed."""
    env = {key: environ.get(name) for key, name in ENVIRONMENT.items()}
    layers = (("flag", flags), ("env", env), ("file", file))

    def pick(key: str) -> Setting:
        for source, values in layers:
            value = values.get(key)
            if value:
                return Setting(value, source)
        return Setting(None, "")

    server, gateway, token = pick("server"), pick("gateway"), pick("token")
    if server.value is not None and gateway.value is not None and token.value is not None:
        return Config(server, gateway, token)
    platform = local()
    if server.value is None:
        server = (
            Setting(platform.api_url, "local")
            if platform is not None
            else Setting(DEFAULT_SERVER, "default")
        )
    if platform is not None and (server.value or "").rstrip("/") == platform.api_url:
        if gateway.value is None:
            gateway = Setting(platform.gateway_url, "local")
        if token.value is None and platform.token:
            token = Setting(platform.token, "local")
    return Config(server, gateway, token)


def load(
    server: str | None = None, token: str | None = None, gateway: str | None = None
) -> Config:
    """The configuration of this invocation: its flags over this process's environment,
    config file and local platform."""
    flags = {"server": server, "gateway": gateway, "token": token}
    return resolve(flags, os.environ, read_file(config_path(os.environ)), local_platform)


def config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "forestflow" / "config.yaml"


def read_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {', '.join(KEYS)}")
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{path}: {key}: unknown key (known: {', '.join(KEYS)})")
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {key}: expected a string")
    return dict(data)


def write_setting(path: Path, key: str, value: str | None) -> None:
    """Set (or with None, remove) one key; the file is private to its owner (it may hold a
    token)."""
    if key not in KEYS:
        raise ConfigError(f"KEY: {key!r} is not one of {', '.join(KEYS)}")
    data = read_file(path)
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(yaml.safe_dump(data, sort_keys=True))


def local_platform() -> LocalPlatform | None:
    """The platform `ffctl up` last started here, as its state file records it."""
    launcher = Launcher()
    settings = launcher.recorded()
    if settings is None:
        return None
    try:
        token = launcher.admin_token()
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    return LocalPlatform(settings.api_url, settings.gateway_url, token)
