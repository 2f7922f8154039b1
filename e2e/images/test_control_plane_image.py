"""The control-plane image, built from a fresh checkout by runtime_image/build.sh (on a base
rootfs mmdebstrap makes from Debian's packages) and run from its unpacked rootfs
(rootfs.py): its API answers /healthz against a Redis the test started, as the non-root user
the Dockerfile declares. Skips where buildah, mmdebstrap or umoci are not installed; CI
installs them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from forestflow_control_plane.platforms.local.redis_server import start_redis, stop_redis
from tests.support import REPO, eventually, free_port

from .rootfs import Bundle, missing_tools, start, unpack

pytestmark = pytest.mark.skipif(
    bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} to build and run images"
)
BUILD_TIMEOUT_S = 900
NON_ROOT_UID = 10001  # control_plane/Dockerfile's USER


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    work = tmp_path_factory.mktemp("images")
    built = subprocess.run(
        ["bash", str(REPO / "runtime_image" / "build.sh"), "control-plane"],
        env={**os.environ, "FF_IMAGES": str(work / "oci")},
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return unpack(work / "oci" / "control-plane", work / "bundle")


@pytest.fixture
def api(control_plane: Bundle, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The image's API, on a free port, against a Redis of the test's own."""
    redis, redis_url = start_redis(tmp_path / "redis", tmp_path / "redis.log")
    port = free_port()
    env = {
        "REDIS_URL": redis_url, "FF_API_HOST": "127.0.0.1", "FF_API_PORT": str(port),
        "FF_ADMIN_TOKEN": "image-test-token-0123456789",
    }
    process = start(control_plane, env, tmp_path / "api.log")
    try:
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.kill()
        process.wait()
        stop_redis(redis)


def test_the_image_declares_a_non_root_user_and_the_api_entrypoint(control_plane: Bundle) -> None:
    assert control_plane.uid == NON_ROOT_UID
    assert control_plane.args == ["python", "-m", "forestflow_control_plane", "api"]
    assert not (control_plane.rootfs / "src").exists()  # the build context was removed


def test_its_api_answers_healthz_as_the_non_root_user(api: tuple[str, int]) -> None:
    url, launcher = api

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    eventually(healthy, 60.0, "the image's API to answer /healthz")
    (server,) = [
        p for p in psutil.Process(launcher).children(recursive=True)
        if "forestflow_control_plane" in " ".join(p.cmdline())
    ]
    assert server.uids().real == NON_ROOT_UID
