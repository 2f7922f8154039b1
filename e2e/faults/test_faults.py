"""The fault suite at CI's size: every (rollout kind, process) pair at least once, at
seeded random instants, with clients calling throughout. FF_FAULT_SEED picks other
instants; bench/faults.py runs it longer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from forestflow_control_plane.settings import Settings

from ..conftest import LocalPlatform
from .campaign import STUCK_AFTER_S, Run, plan, serving_v1

KILL_POINTS = int(os.environ.get("FF_FAULT_POINTS", "30"))  # each (kind, target) once
SEED = int(os.environ.get("FF_FAULT_SEED", "11"))
RESUME_SLACK_S = 5.0


@pytest.fixture
def run(local_platform: LocalPlatform, example: Path) -> Iterator[Run]:
    faults = serving_v1(local_platform, example, SEED, STUCK_AFTER_S)
    yield faults
    faults.close()


@pytest.mark.timeout(60 * KILL_POINTS)
def test_no_fault_leaves_a_rollout_stuck_or_a_request_lost(run: Run) -> None:
    campaign = asyncio.run(run.campaign(plan(SEED, KILL_POINTS)))
    median, worst = campaign.recovery()
    print(f"{len(campaign.points)} kill points, {campaign.tally.total} requests, "
          f"failed: {dict(campaign.failures())}, recovered in {median:.1f} s median, "
          f"{worst:.1f} s max")
    assert campaign.violations() == []
    assert campaign.stuck == []
    assert campaign.lost() == 0
    # A worker restarted by `ffctl up` resumes what its predecessor left at its first
    # reconcile pass, one interval on (this busy two-core machine is allowed a few seconds).
    assert worst <= Settings.reconcile_seconds + RESUME_SLACK_S
