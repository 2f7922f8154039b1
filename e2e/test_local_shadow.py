"""Scenario (c): a shadow v4 with other weights runs beside v1. Clients only ever reach v1;
the mirror replays their requests to v4 through the gateway's Service route, and
`ffctl shadow report` shows the agreement and differences computed here with torch."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.support import eventually

from .conftest import LocalPlatform
from .load import INPUT, Tally, load
from .test_local_in_place import with_weights

MIN_REPLAYS = 30


def shadow_of(model_yaml: Path) -> Path:
    spec = yaml.safe_load(with_weights(model_yaml, 7).read_text())
    spec["variant"]["version"] = "v4"
    spec["rollout"] = {"phase_in": {"policy": "immediate"}}
    spec["shadow"] = {"sample_rate": 1.0}
    target = model_yaml.with_name("v4-shadow.yaml")
    target.write_text(yaml.safe_dump(spec))
    return target


def answers_of(model_yaml: Path, weights: str) -> torch.Tensor:
    sys.path.insert(0, str(model_yaml.parent))
    try:
        from model import MLP  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    mlp = MLP()
    mlp.load_state_dict(load_file(str(model_yaml.parent / weights)))
    with torch.inference_mode():
        return mlp(torch.tensor(INPUT))  # type: ignore[no-any-return]


def report(platform: LocalPlatform) -> dict[str, Any]:
    printed = platform.ffctl("shadow", "report", "examples/mlp", "-o", "json")
    assert printed.returncode == 0, printed.stdout + printed.stderr
    (shadow,) = orjson.loads(printed.stdout)["shadows"]
    return shadow  # type: ignore[no-any-return]


async def traffic_until_mirrored(platform: LocalPlatform) -> Tally:
    async with load(platform) as tally:
        await asyncio.to_thread(
            eventually, lambda: report(platform)["requests"] >= MIN_REPLAYS, 90.0,
            f"{MIN_REPLAYS} requests mirrored to the shadow",
        )
    return tally


def test_a_shadow_sees_mirrored_traffic_and_its_agreement_report_is_right(
    local_platform: LocalPlatform, example: Path
) -> None:
    local_platform.up()
    assert local_platform.ffctl("deploy", str(example), "--wait").returncode == 0
    shadow = shadow_of(example)
    deployed = local_platform.ffctl("deploy", str(shadow), "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    tally = asyncio.run(traffic_until_mirrored(local_platform))
    print(tally.summary("(c) shadow v4 beside v1"))
    assert tally.failures == []
    assert tally.served().keys() == {"v1"}  # a shadow never answers a client

    primary = answers_of(example, "mlp.safetensors")
    candidate = answers_of(example, "mlp-7.safetensors")
    same_class = (primary.argmax(-1) == candidate.argmax(-1)).float().mean().item()
    shown = report(local_platform)
    print(f"scenario (c) report: {shown}")
    assert shown["version"] == "v4" and shown["primary_versions"] == ["v1"]
    assert shown["errors"] == 0
    assert shown["compared"] == len(INPUT) * shown["requests"]
    assert shown["agreement"] == pytest.approx(same_class)
    differences = (primary - candidate).abs()
    assert shown["max_abs_diff"] == pytest.approx(differences.max().item(), abs=1e-5)
    assert shown["mean_abs_diff"] == pytest.approx(differences.mean().item(), abs=1e-5)
    assert shown["latency_ms"]["shadow"]["p50"] > 0
