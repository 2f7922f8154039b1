"""A replica that dies is replaced: requests in flight on it are sent again, new ones wait for
the restart, and a runtime that keeps failing is retried under a growing backoff."""

from __future__ import annotations

import os
import signal
import time

import httpx

from tests.support import eventually

from . import test_gateway as harness
from .test_gateway import INPUT, A, Harness, served
from .test_gateway_scaling import under_load

# The harness's fixtures, by name: one gateway process for this module too.
gateway, gw, mlp = harness.gateway, harness.gw, harness.mlp


def test_a_killed_replica_is_restarted_and_no_request_fails(gw: Harness) -> None:
    gw.deploy("crash/scoring", {"v1": 100})
    url, labels = gw.predict_url("crash/scoring"), {"contract": "crash/scoring", "version": "v1"}
    eventually(lambda: served(gw, url), 60, "the contract to be served")
    (first,) = gw.runtime_pids("crash_")

    statuses = under_load(
        url,
        lambda: os.kill(first, signal.SIGKILL),
        lambda: gw.runtime_pids("crash_") not in ([], [first]),
        "a new runtime",
    )
    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} failed"
    assert gw.metric("forestflow_gateway_restarts_total", **labels) == 1
    assert gw.metric("forestflow_gateway_replicas", **labels) == 1
    assert first not in gw.runtime_pids("crash_")


def test_a_runtime_that_keeps_failing_is_retried_under_a_growing_backoff(gw: Harness) -> None:
    gw.deploy("broken/scoring", {"v1": 100}, uri="nope.safetensors",
              annotations={A + "min-scale": "1"})
    labels = {"contract": "broken/scoring", "version": "v1"}
    failed_at: list[float] = []

    def failures() -> float:
        """Failed starts so far, each timed when first seen."""
        count = gw.metric("forestflow_gateway_hydrations_total", outcome="failure", **labels)
        while len(failed_at) < count:
            failed_at.append(time.monotonic())
        return count

    # Restarts follow the 1st failure at once, then 0.5 s and 1 s after the 2nd and 3rd.
    eventually(lambda: failures() >= 3, 60, "three failed starts")
    refused = httpx.post(gw.predict_url("broken/scoring"), json=INPUT)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "keeps failing (3 in a row)" in refused.json()["error"]
    eventually(lambda: failures() >= 4, 60, "a fourth failed start")
    assert failed_at[2] - failed_at[1] >= 0.45  # the 0.5 s backoff, polled every 50 ms
    assert failed_at[3] - failed_at[2] >= 0.95
    assert gw.metric("forestflow_gateway_restarts_total", **labels) >= 3
