"""Where a control-plane process finds Redis, its state directory and its peers.

Read once from the environment by each process entry point and passed down, never
consulted from deep inside the code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def default_home() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "forestflow"


@dataclass(frozen=True)
class Settings:
    home: Path
    redis_url: str
    api_host: str = "127.0.0.1"
    api_port: int = 8081
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    domain: str = "forestflow.local"
    platform: str = "local"
    runtime_image: str = "ghcr.io/forestflow/runtime:0.1.0"
    prometheus_url: str | None = None
    reconcile_seconds: float = 10.0
    mirror_metrics_port: int | None = None
    kube_context: str | None = None  # knative: a kubeconfig context; None: in-cluster or current
    # knative: the Redis URL runtime pods reach (payload events, shadows, streams).
    runtime_redis_url: str | None = None
    # The gateway refuses (413) a request body past this before reading it whole.
    max_request_bytes: int = 64 * 2**20

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        redis_url = env.get("REDIS_URL", "")
        if not redis_url:
            raise SettingsError("REDIS_URL is not set")
        platform = env.get("FF_PLATFORM", "local")
        if platform not in ("local", "knative"):
            raise SettingsError(f"FF_PLATFORM: unknown platform {platform!r} (local, knative)")
        return cls(
            home=Path(env.get("FF_HOME") or default_home()),
            redis_url=redis_url,
            api_host=env.get("FF_API_HOST", "127.0.0.1"),
            api_port=_port(env, "FF_API_PORT", 8081),
            gateway_host=env.get("FF_GATEWAY_HOST", "127.0.0.1"),
            gateway_port=_port(env, "FF_GATEWAY_PORT", 8080),
            domain=env.get("FF_DOMAIN", "forestflow.local"),
            platform=platform,
            runtime_image=env.get("FF_RUNTIME_IMAGE", cls.runtime_image),
            prometheus_url=env.get("FF_PROMETHEUS_URL") or None,
            reconcile_seconds=_seconds(env, "FF_RECONCILE_SECONDS", 10.0),
            mirror_metrics_port=_port(env, "FF_MIRROR_METRICS_PORT", 0) or None,
            kube_context=env.get("FF_KUBE_CONTEXT") or None,
            runtime_redis_url=env.get("FF_RUNTIME_REDIS_URL") or None,
            max_request_bytes=_bytes(env, "FF_MAX_REQUEST_BYTES", cls.max_request_bytes),
        )

    def to_env(self) -> dict[str, str]:
        """The environment that gives a child process these same settings."""
        return {
            "FF_HOME": str(self.home),
            "REDIS_URL": self.redis_url,
            "FF_API_HOST": self.api_host,
            "FF_API_PORT": str(self.api_port),
            "FF_GATEWAY_HOST": self.gateway_host,
            "FF_GATEWAY_PORT": str(self.gateway_port),
            "FF_DOMAIN": self.domain,
            "FF_PLATFORM": self.platform,
            "FF_RUNTIME_IMAGE": self.runtime_image,
            "FF_PROMETHEUS_URL": self.prometheus_url or "",
            "FF_RECONCILE_SECONDS": str(self.reconcile_seconds),
            "FF_MIRROR_METRICS_PORT": str(self.mirror_metrics_port or ""),
            "FF_KUBE_CONTEXT": self.kube_context or "",
            "FF_RUNTIME_REDIS_URL": self.runtime_redis_url or "",
            "FF_MAX_REQUEST_BYTES": str(self.max_request_bytes),
        }


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: not a port number: {raw!r}") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"{name}: port out of range: {port}")
    return port


def _bytes(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SettingsError(f"{name}: not a positive number of bytes: {raw!r}")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        seconds = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: not a number of seconds: {raw!r}") from None
    if not 0 < seconds <= 86_400:
        raise SettingsError(f"{name}: must be in (0, 86400] seconds, got {raw!r}")
    return seconds
