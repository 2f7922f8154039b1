"""The RQ entry points of rollout work, and how steps are scheduled.

RQ finds a job's function by its import path and calls it with the job's arguments only,
so the parts a job needs cannot travel with it: the worker process binds them here once,
at its start (`bind`), from the composition root. A job run anywhere else fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from rq import Queue, Retry, get_current_job

from forestflow_control_plane.rollouts.engine import Rollouts, Schedule, StepCall
from forestflow_control_plane.rollouts.in_place import InPlace

JOB_TIMEOUT_S = 600
# A job that failed (Redis gone as it ran, a race lost past the store's own retries) runs
# again, as every rollout job may.
JOB_RETRY = Retry(max=3, interval=[1, 2, 4])


class JobParts(Protocol):
    def rollouts(self) -> Rollouts: ...

    def in_place(self, client: httpx.Client) -> InPlace: ...


_bound: list[JobParts] = []


def bind(parts: JobParts) -> None:
    """Give this process's jobs their parts; the worker calls it once, before it works."""
    _bound[:] = [parts]


def _parts() -> JobParts:
    if not _bound:
        raise RuntimeError("rollout jobs run in a worker process that bound its parts")
    return _bound[0]


def start_rollout(contract: str, version: str) -> dict[str, Any]:
    """Enqueued by a deploy."""
    return _parts().rollouts().start(contract, version)


def advance_rollout(contract: str, version: str, token: int) -> dict[str, Any]:
    """Scheduled by the previous step."""
    return _parts().rollouts().advance(contract, version, token)


def swap_in_place(contract: str, version: str, model: dict[str, Any]) -> dict[str, Any]:
    """Enqueued by an in-place deploy."""
    job = get_current_job()
    with httpx.Client() as client:
        return _parts().in_place(client).run(contract, version, model, job.id if job else None)


def realise(contract: str) -> bool:
    """Enqueued by an API write: the platform made to match what the store holds now."""
    return _parts().rollouts().realise(contract)


def rq_realise(queue: Queue) -> Callable[[str], None]:
    def enqueue(contract: str) -> None:
        queue.enqueue(realise, contract, job_timeout=JOB_TIMEOUT_S, retry=JOB_RETRY,
                      description=f"apply {contract}")

    return enqueue


def rq_schedule(queue: Queue) -> Schedule:
    def schedule(call: StepCall) -> None:
        queue.enqueue_at(
            datetime.fromtimestamp(call.at, tz=UTC),
            advance_rollout,
            call.contract,
            call.version,
            call.token,
            job_timeout=JOB_TIMEOUT_S, retry=JOB_RETRY,
            description=f"rollout step {call.contract}@{call.version} #{call.token}",
        )

    return schedule
