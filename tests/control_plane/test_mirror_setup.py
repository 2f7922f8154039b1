"""Where the mirror reaches a shadow, the settings it runs with, and the mirror process
itself: its /metrics and its stop on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from redis import Redis

from forestflow_control_plane.composition import Parts
from forestflow_control_plane.settings import Settings, SettingsError
from forestflow_control_plane.shadows.mirror import MirrorConfig
from forestflow_control_plane.shadows.targets import Target
from tests.support import REPO, eventually, free_port

from .mirror_support import GROUP, STREAM, C

TARGETS = [
    ("local: the gateway, by the Service's host", Settings(Path("/h"), "redis://r"),
     Target("http://127.0.0.1:8080", "ff-mlp-v2.examples.forestflow.local")),
    ("local, another gateway and domain",
     Settings(Path("/h"), "redis://r", gateway_port=9000, domain="ml.example"),
     Target("http://127.0.0.1:9000", "ff-mlp-v2.examples.ml.example")),
    ("knative: the Service's cluster-local name",
     Settings(Path("/h"), "redis://r", platform="knative"),
     Target("http://ff-mlp-v2.examples.svc.cluster.local")),
]


@pytest.mark.parametrize(("name", "settings", "want"), TARGETS, ids=[t[0] for t in TARGETS])
def test_where_a_shadow_is_reached(name: str, settings: Settings, want: Target) -> None:
    assert Parts(settings).shadow_targets().target(C, "v2") == want


PORTS: list[tuple[str, dict[str, str], int | None]] = [
    ("unset: no metrics server", {}, None),
    ("empty: none either", {"FF_MIRROR_METRICS_PORT": ""}, None),
    ("a port", {"FF_MIRROR_METRICS_PORT": "9108"}, 9108),
]


@pytest.mark.parametrize(("name", "env", "want"), PORTS, ids=[p[0] for p in PORTS])
def test_mirror_metrics_port_setting(name: str, env: dict[str, str], want: int | None) -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://r", **env})
    assert settings.mirror_metrics_port == want
    assert Settings.from_env(settings.to_env()).mirror_metrics_port == want


def test_a_bad_mirror_metrics_port_is_named() -> None:
    with pytest.raises(SettingsError, match="FF_MIRROR_METRICS_PORT: not a port number"):
        Settings.from_env({"REDIS_URL": "redis://r", "FF_MIRROR_METRICS_PORT": "metrics"})


def test_claims_must_wait_longer_than_a_replay() -> None:
    with pytest.raises(ValueError, match="claim_idle_s: must exceed replay_timeout_s"):
        MirrorConfig(replay_timeout_s=30, claim_idle_s=30)


def test_the_mirror_process_serves_metrics_and_stops_on_sigterm(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FF_")}
    env.update(REDIS_URL=redis_url, FF_HOME=str(tmp_path), FF_MIRROR_METRICS_PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "forestflow_control_plane", "mirror"], env=env, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        def metrics_served() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with contextlib.suppress(httpx.TransportError):
                return "forestflow_shadow_compared_total" in httpx.get(
                    f"http://127.0.0.1:{port}/metrics"
                ).text
            return False

        eventually(metrics_served, 120, "the mirror's /metrics")
        eventually(lambda: redis.exists(STREAM) == 1, 120, "the stream and its group")
        assert [g["name"] for g in redis.xinfo_groups(STREAM)] == [GROUP.encode()]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
