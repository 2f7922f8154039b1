"""The control plane as the cluster scenarios run it: model files for the test's contract,
deploys enqueued on the rollout queue as the API enqueues them, a real RQ worker process
with FF_PLATFORM=knative, and what the store and the cluster say of the rollout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from kubernetes import client
from redis import Redis
from rq import Queue
from rq.job import Job

from forestflow_control_plane import names
from forestflow_control_plane.knative.annotations import GROUP, VERSION
from forestflow_control_plane.rollouts.deploys import register, swap_of
from forestflow_control_plane.rollouts.jobs import JOB_TIMEOUT_S, start_rollout, swap_in_place
from forestflow_control_plane.spec.model_file import ModelFile, validate_model_file
from forestflow_control_plane.state.records import RolloutRecord
from forestflow_control_plane.state.store import Store

READY_S = 300.0
T = TypeVar("T")
WORKER = [sys.executable, "-m", "forestflow_control_plane", "worker"]
# The cluster's Prometheus for the knative workers' gates: FF_E2E_PROMETHEUS_URL (the test
# cluster's, kept apart so that the local platform's tests scrape their runtimes), else
# FF_PROMETHEUS_URL.
PROMETHEUS = os.environ.get("FF_E2E_PROMETHEUS_URL") or os.environ.get("FF_PROMETHEUS_URL")
PROMETHEUS_MISSING = (
    "FF_PROMETHEUS_URL: a Prometheus scraping the cluster's runtime pods (see "
    "knative/prometheus/scrape.yaml); gates cannot scrape pods from outside the cluster, and "
    "the knative worker needs it to start (metrics.source_for)"
)


def wait_for(check: Callable[[], T | None], what: str, timeout: float = READY_S,
             why: Callable[[], str] | None = None) -> T:
    """`check`'s first truthy answer, asked every 0.2 s; the test fails after `timeout`,
    saying `why()` when given (what the waited-on thing last said of itself)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            said = f" ({why()})" if why else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}{said}")
        time.sleep(0.2)
    return found


def spec(
    namespace: str, version: str, models: str, artifact: str | None = None, **sections: Any
) -> ModelFile:
    """The test contract's model file for `version`, serving `<artifact or version>.pt2`
    from the in-cluster file server, one warm replica; `sections` replace or extend the
    top-level sections (`rollout`, `slo`, `expiry`, `shadow`) and `variant=` merges into
    the variant."""
    variant: dict[str, Any] = {
        "version": version,
        "model": {"uri": f"{models}/{artifact or version}.pt2", "format": "torch_export"},
        "scaling": {"min_replicas": 1, "max_replicas": 1},
    }
    variant.update(sections.pop("variant", {}))
    return validate_model_file({
        "contract": {
            "name": f"{namespace}/mlp",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}],
        },
        "variant": variant,
        "rollout": {"phase_in": {"policy": "immediate"}},
        **sections,
    })


def enqueue_deploy(redis: Redis, model: ModelFile) -> None:
    """What `POST /v1/deploy` does for a new version: register it, enqueue its rollout."""
    register(Store(redis), model, who="e2e")
    Queue(names.ROLLOUT_QUEUE, connection=redis).enqueue(
        start_rollout, model.contract.name, model.variant.version, job_timeout=JOB_TIMEOUT_S,
        description=f"rollout {model.contract.name}@{model.variant.version}",
    )


def enqueue_swap(redis: Redis, model: ModelFile) -> Job:
    """What `POST /v1/deploy` does for new weights under a serving version (in_place)."""
    snapshot = register(Store(redis), model, who="e2e")
    swap = swap_of(snapshot, model)
    assert swap is not None, "not an in-place change"
    return Queue(names.ROLLOUT_QUEUE, connection=redis).enqueue(
        swap_in_place, model.contract.name, model.variant.version, swap,
        job_timeout=JOB_TIMEOUT_S,
    )


def rollout(redis: Redis, contract: str) -> RolloutRecord | None:
    return Store(redis).get(contract).contract.rollout


def finished(redis: Redis, contract: str, version: str) -> str | None:
    """The status `version`'s rollout finished with; None while it runs (or is not its)."""
    record = rollout(redis, contract)
    if record is None or record.candidate != version or not record.finished:
        return None
    return record.status.value


def traffic(redis: Redis, contract: str) -> dict[str, int]:
    """The stored split, the versions with a share only."""
    return {v: p for v, p in Store(redis).get(contract).contract.traffic.items() if p > 0}


def states(redis: Redis, contract: str) -> dict[str, str]:
    return {v: str(r.state) for v, r in Store(redis).get(contract).variants.items()}


def services(kube: client.ApiClient, namespace: str) -> list[str]:
    listed = cast(dict[str, Any], client.CustomObjectsApi(kube).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "services",
        label_selector=f"forestflow.dev/contract={namespace}.mlp",
    ))
    return sorted(item["metadata"]["name"] for item in listed["items"])


def service_url(kube: client.ApiClient, namespace: str, name: str) -> str | None:
    """The URL Knative gives the Service, once it has one."""
    service = cast(dict[str, Any], client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "services", name
    ))
    url = (service.get("status") or {}).get("url")
    return str(url) if url else None


class Workers:
    """Real `python -m forestflow_control_plane worker` processes on the test's Redis, each
    in its own process group (an RQ worker forks a work horse per job)."""

    def __init__(self, redis_url: str, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FF_HOME")}
        self.env.update({
            "REDIS_URL": redis_url, "FF_PLATFORM": "knative", "FF_HOME": str(home),
            "FF_RECONCILE_SECONDS": "5",
            **({"FF_PROMETHEUS_URL": PROMETHEUS} if PROMETHEUS else {}),
        })
        self.log = home / "worker.log"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                WORKER, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and any work horse it forked, as a crash would."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill(process)

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else "(no worker log)"

