"""`ffctl deploy --wait`: wait for the deploy's job, then follow the rollout it started until
it finishes, showing each change live on a terminal and as plain lines elsewhere."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from rich.live import Live

from forestflow_cli.client import Client
from forestflow_cli.output import out
from forestflow_cli.progress import (
    FINISHED,
    RolloutView,
    progress_line,
    progress_table,
    rollout_view,
)

POLL_S = 0.1
JOB_DONE = ("finished", "failed", "stopped", "canceled")


@dataclass(frozen=True)
class Outcome:
    """How the wait ended: `ok` or not, and why."""

    ok: bool
    status: str
    reason: str = ""


class Reporter(Protocol):
    def show(self, view: RolloutView) -> None: ...


class LineReporter:
    """A line per change: for pipes, files and CI logs."""

    def __init__(self) -> None:
        self._last: str | None = None

    def show(self, view: RolloutView) -> None:
        line = progress_line(view)
        if line != self._last:
            self._last = line
            out.print(line, markup=False, highlight=False, soft_wrap=True)


class LiveReporter:
    """A table redrawn in place: for a person at a terminal."""

    def __init__(self, live: Live) -> None:
        self._live = live

    def show(self, view: RolloutView) -> None:
        self._live.update(progress_table(view), refresh=True)


@contextlib.contextmanager
def reporter() -> Iterator[Reporter]:
    if not out.is_terminal:
        yield LineReporter()
        return
    with Live(console=out, auto_refresh=False, transient=False) as live:
        yield LiveReporter(live)


def wait_job(client: Client, job_id: str, deadline: float) -> dict[str, Any]:
    while True:
        job = client.job(job_id)
        if job["status"] in JOB_DONE:
            return job
        if time.monotonic() > deadline:
            return {**job, "status": "timed out", "error": f"job still {job['status']}"}
        time.sleep(POLL_S)


def follow_rollout(
    client: Client, contract: str, version: str, deadline: float, until_percent: int | None
) -> Outcome:
    """Follow `version`'s rollout to its end, or, with `until_percent`, until the candidate
    has held that share or more through a whole step (its gate passed there)."""
    with reporter() as shown:
        while True:
            body = client.rollout(contract)
            view = rollout_view(body["traffic"], body["rollout"])
            if view is None or view.candidate != version:
                return Outcome(False, "superseded", f"the rollout of {version} was replaced")
            shown.show(view)
            if view.status in FINISHED:
                return Outcome(view.status == "succeeded", view.status, view.reason)
            if until_percent is not None and _held(view, until_percent):
                return Outcome(True, view.status, f"held {until_percent}% or more")
            if time.monotonic() > deadline:
                return Outcome(False, "timed out", f"still {view.status} at the deadline")
            time.sleep(POLL_S)


def _held(view: RolloutView, until: int) -> bool:
    """Whether a finished step (every one before the current) had the candidate at `until`
    percent or more."""
    return any(p >= until for p in view.plan[: view.step - 1])
