"""One request through every layer: ffctl -> API -> Redis -> RQ worker -> local platform
objects -> gateway -> hydrated runtime process, then dehydration, rehydration and down."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.support import eventually

from .conftest import LocalPlatform, running
from .load import INPUT


def expected(model_yaml: Path) -> list[float]:
    """The example's outputs for INPUT computed here with torch, flattened."""
    sys.path.insert(0, str(model_yaml.parent))
    try:
        from model import MLP  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    mlp = MLP()
    mlp.load_state_dict(load_file(str(model_yaml.parent / "mlp.safetensors")))
    with torch.inference_mode():
        return mlp(torch.tensor(INPUT)).flatten().tolist()  # type: ignore[no-any-return]


def outputs(response: httpx.Response) -> list[float]:
    return [x for row in response.json()["output"] for x in row]


def predict(platform: LocalPlatform) -> httpx.Response:
    return httpx.post(
        f"{platform.gateway}/contracts/examples/mlp/v1/mlp/predict",
        json={"input": INPUT},
        timeout=120,
    )


async def predict_many(platform: LocalPlatform, count: int) -> list[httpx.Response]:
    """`count` requests at once against a variant at zero: all wait for one hydration."""
    async with httpx.AsyncClient(timeout=120) as client:
        url = f"{platform.gateway}/contracts/examples/mlp/v1/mlp/predict"
        requests = (client.post(url, json={"input": INPUT}) for _ in range(count))
        return await asyncio.gather(*requests)


def test_deploy_serve_dehydrate_rehydrate_and_down(
    local_platform: LocalPlatform, example: Path
) -> None:
    local_platform.up()
    deployed = local_platform.ffctl("deploy", str(example), "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "traffic: v1 100%" in deployed.stdout

    curl_line = next(line for line in deployed.stdout.splitlines() if line.startswith("curl "))
    if shutil.which("curl"):
        printed = subprocess.run(shlex.split(curl_line), capture_output=True, timeout=120)
        assert printed.returncode == 0
        assert len(orjson.loads(printed.stdout)["output"][0]) == 3

    eventually(lambda: local_platform.runtime_pids() == [], what="the curl line's runtime to go")
    burst = asyncio.run(predict_many(local_platform, 50))
    assert [r.status_code for r in burst] == [200] * 50, {r.text for r in burst}
    assert {r.headers["x-forestflow-variant"] for r in burst} == {"v1"}
    for response in burst:
        assert outputs(response) == pytest.approx(expected(example), abs=1e-6)
    (first,) = local_platform.runtime_pids()  # the burst woke exactly one replica
    assert running(first)

    eventually(
        lambda: not running(first) and local_platform.runtime_pids() == [],
        what="dehydration after 3 s of idleness",
    )

    again = predict(local_platform)
    runtimes, pids = local_platform.runtime_pids(), local_platform.tracked_pids()
    assert again.status_code == 200
    assert outputs(again) == pytest.approx(expected(example), abs=1e-6)
    assert len(runtimes) == 1 and runtimes[0] != first
    assert len(pids) == 7  # redis, api, worker, gateway, mirror, zygote, one runtime
    down = local_platform.ffctl("down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids if running(pid)] == []
    assert local_platform.tracked_pids() == []


def with_field(model_yaml: Path, path: str, value: object) -> Path:
    spec = yaml.safe_load(model_yaml.read_text())
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    bad = model_yaml.with_name("bad.yaml")
    bad.write_text(yaml.safe_dump(spec))
    return bad


BAD_FILES = [
    ("missing field", "variant.version", None, "variant.version"),
    ("unknown format", "variant.model.format", "pickle", "variant.model.format"),
    ("missing model path", "variant.model.uri", "no-such-weights.safetensors", "variant.model.uri"),
]


def test_bad_model_files_are_refused_and_nothing_is_stored(
    local_platform: LocalPlatform, example: Path
) -> None:
    local_platform.up()
    for name, path, value, field in BAD_FILES:
        done = local_platform.ffctl("deploy", str(with_field(example, path, value)))
        assert done.returncode != 0, name
        assert field in done.stderr, (name, done.stderr)
    listed = local_platform.ffctl("get", "contracts", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert orjson.loads(listed.stdout) == []
