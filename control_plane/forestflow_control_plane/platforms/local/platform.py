"""Apply side of the local platform: keep the Knative objects in Redis for the gateway."""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import psutil
from redis import Redis

from forestflow_control_plane import names
from forestflow_control_plane.knative import admission
from forestflow_control_plane.knative.resources import (
    VERSION_LABEL,
    contract_of,
    make_objects,
)
from forestflow_control_plane.platforms.base import TrialError, VariantStatus
from forestflow_control_plane.platforms.local.redis_server import free_port
from forestflow_control_plane.policies.desired import DesiredState

HASH_OF_KIND = {"Service": names.LOCAL_SERVICES, "Route": names.LOCAL_ROUTES}


TRIAL_READY_TIMEOUT_S = 300.0


class LocalPlatform:
    def __init__(self, redis: Redis, image: str, home: Path | None = None) -> None:
        self._redis = redis
        self._image = image
        self._home = home

    @contextlib.contextmanager
    def trial_replica(self, service: dict[str, Any]) -> Iterator[str | None]:
        """A runtime of `service` on a free port, for as long as the block runs: new weights
        are tried on it when no replica is running. Raises TrialError with the runtime's
        last words when it exits or is not ready in time."""
        container = service["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        port = free_port()
        env.update(FF_HOST="127.0.0.1", FF_PORT=str(port))
        env.pop("FF_PAYLOAD_SAMPLE_RATE", None)  # a trial's answers are not traffic
        ready = container["readinessProbe"]["httpGet"]["path"]
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "forestflow_runtime"], env={**os.environ, **env},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            try:
                _wait_ready(process, f"http://127.0.0.1:{port}{ready}", log)
                yield f"http://127.0.0.1:{port}"
            finally:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def apply(self, state: DesiredState) -> bool:
        """Write objects that differ, drop this contract's objects that are no longer
        desired, and wake the gateway. A repeat apply writes nothing. Objects a cluster
        would refuse raise admission.InvalidObjectError before anything is written."""
        objects = make_objects(state, self._image)
        admission.check_all(objects)
        wanted = {
            (HASH_OF_KIND[o["kind"]], _field(o)): orjson.dumps(o, option=orjson.OPT_SORT_KEYS)
            for o in objects
        }
        pipe = self._redis.pipeline()
        for key in HASH_OF_KIND.values():
            pipe.hgetall(key)
        current = {}
        for key, rows in zip(HASH_OF_KIND.values(), pipe.execute(), strict=True):
            for field, raw in rows.items():
                if contract_of(orjson.loads(raw)) == state.contract:
                    current[(key, field.decode())] = raw
        if current == wanted:
            return False
        pipe = self._redis.pipeline()
        for key, field in current.keys() - wanted.keys():
            pipe.hdel(key, field)
        for (key, field), raw in wanted.items():
            if current.get((key, field)) != raw:
                pipe.hset(key, field, raw)
        pipe.publish(names.LOCAL_CHANGED, state.contract)
        pipe.execute()
        return True

    def observe(self, contract: str) -> dict[str, VariantStatus]:
        label = names.contract_label(contract)
        statuses = {}
        for raw in self._redis.hvals(names.LOCAL_STATUS):
            status = orjson.loads(raw)
            if status["contract"] == label:
                statuses[status["version"]] = VariantStatus(
                    status["version"], status["ready"], status["replicas"]
                )
        return statuses

    def contracts(self) -> set[str]:
        pipe = self._redis.pipeline()
        for key in HASH_OF_KIND.values():
            pipe.hvals(key)
        owners = (contract_of(orjson.loads(raw)) for rows in pipe.execute() for raw in rows)
        return {contract for contract in owners if contract is not None}

    def served(self, contract: str) -> None:
        return None

    def replica_urls(self, contract: str, version: str) -> list[str]:
        """Base URLs of the variant's running replicas. Read from the supervisor's PID files
        (`<home>/pids/runtimes/<namespace>_<service>-<port>.pid`, see Supervisor.start): the
        gateway's status hash counts replicas but does not say where they listen."""
        if self._home is None:
            raise ValueError("replica_urls: this LocalPlatform was made without its home")
        namespace, _ = names.split_contract(contract)
        service = names.object_key(namespace, names.service_name(contract, version))
        prefix = service.replace("/", "_") + "-"
        urls = []
        runtimes = self._home / "pids" / "runtimes"
        for pid_file in sorted(runtimes.glob(glob.escape(prefix) + "*.pid")):
            port = pid_file.stem.removeprefix(prefix)
            if not port.isdigit():  # another version whose name starts with this one's
                continue
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if psutil.pid_exists(pid):  # a gateway that died leaves its PID files behind
                urls.append(f"http://127.0.0.1:{port}")
        return urls


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: IO[bytes]) -> None:
    deadline = time.monotonic() + TRIAL_READY_TIMEOUT_S
    with httpx.Client(timeout=5.0) as client:
        while True:
            if process.poll() is not None:
                raise TrialError(f"the trial runtime exited ({process.returncode}): {_tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(url).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TrialError(f"the trial runtime was not ready in time: {_tail(log)}")
            time.sleep(0.05)


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    return " | ".join(lines[-3:])


def _field(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return names.object_key(meta["namespace"], meta["name"])


def version_of(service: dict[str, Any]) -> str:
    return str(service["metadata"]["labels"][VERSION_LABEL])
