"""Scenario (d): a burst after a quiet night. The variant is at zero; 50 clients call at
once; every request waits for the one hydration and none is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support import eventually

from .conftest import LocalPlatform
from .load import Tally, load, until_answered

BURST = 50


async def burst(platform: LocalPlatform) -> Tally:
    async with load(platform, clients=BURST) as tally:
        await until_answered(tally, 4 * BURST, timeout=120)
    return tally


def test_a_variant_at_zero_wakes_under_a_burst_and_loses_nothing(
    local_platform: LocalPlatform, example: Path
) -> None:
    local_platform.up()
    assert local_platform.ffctl("deploy", str(example), "--wait").returncode == 0
    for night in (1, 2):
        eventually(lambda: local_platform.runtime_pids() == [], what="the variant to go to zero")
        tally = asyncio.run(burst(local_platform))
        print(tally.summary(f"(d) burst of {BURST} on a variant at zero, night {night}"))
        assert tally.failures == []
        assert tally.served().keys() == {"v1"}
        assert len(local_platform.runtime_pids()) == 1  # one hydration served them all
