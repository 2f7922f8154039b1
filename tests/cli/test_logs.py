"""The payload log: events XADDed to the stream the runtimes write, read back through the
API's payloads endpoint and `ffctl logs`, filtered to one contract (and variant), tailed
and followed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import pytest
import yaml
from redis import Redis

from forestflow_control_plane.shadows.payload_log import PAYLOAD_STREAM
from tests.support import eventually

from .conftest import ADMIN, CONTRACT, Ffctl, deploy, model_spec

C = f"/v1/contracts/{CONTRACT}"


def xadd(redis: Redis, contract: str, variant: str, n: int) -> str:
    """One event as the runtime's PayloadSink writes it; its stream id."""
    fields: dict[str | bytes, str | bytes] = {
        "contract": contract,
        "variant": variant,
        "request_id": f"req-{n}",
        "inputs": orjson.dumps({"input": {"shape": [1, 4], "data": [n, 0.5, -1.0, 2.0]}}),
        "outputs": orjson.dumps({"output": {"shape": [1, 3], "data": [0.1, 0.2, n]}}),
        "latency_ms": f"{n + 0.25:.3f}",
        "time": f"{1_700_000_000 + n:.6f}",
    }
    entry_id = redis.xadd(PAYLOAD_STREAM, fields)  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


@pytest.fixture
def logged(api: httpx.Client, redis: Redis, tmp_path: Path) -> list[str]:
    """Events 0..5 of examples/mlp (v1 even, v2 odd) between other contracts' events."""
    deploy(api, model_spec(tmp_path))
    ids = []
    for n in range(6):
        xadd(redis, "other/model", "v1", 100 + n)
        ids.append(xadd(redis, CONTRACT, "v1" if n % 2 == 0 else "v2", n))
    redis.xadd(PAYLOAD_STREAM, {"contract": CONTRACT, "variant": "v1", "inputs": b"not json"})
    return ids


def requests(page: dict[str, Any]) -> list[str]:
    return [e["request_id"] for e in page["events"]]


@pytest.mark.parametrize(
    ("params", "want"),
    [
        ({"count": 3}, ["req-3", "req-4", "req-5"]),
        ({"count": 100}, [f"req-{n}" for n in range(6)]),
        ({"count": 2, "variant": "v2"}, ["req-3", "req-5"]),
        ({"count": 10, "variant": "v9"}, []),
    ],
)
def test_the_tail_holds_the_contracts_last_events_oldest_first(
    api: httpx.Client, logged: list[str], params: dict[str, Any], want: list[str]
) -> None:
    page = api.get(f"{C}/payloads", params=params).json()
    assert (page["contract"], requests(page)) == (CONTRACT, want)


def test_an_event_carries_what_the_runtime_recorded(api: httpx.Client, logged: list[str]) -> None:
    (event,) = api.get(f"{C}/payloads", params={"count": 1, "variant": "v2"}).json()["events"]
    assert event == {
        "id": logged[5], "variant": "v2", "request_id": "req-5",
        "inputs": {"input": {"shape": [1, 4], "data": [5, 0.5, -1.0, 2.0]}},
        "outputs": {"output": {"shape": [1, 3], "data": [0.1, 0.2, 5]}},
        "latency_ms": 5.25, "time": 1_700_000_005.0,
    }


def test_after_a_cursor_come_only_newer_events(
    api: httpx.Client, redis: Redis, logged: list[str]
) -> None:
    tail = api.get(f"{C}/payloads", params={"count": 2}).json()
    assert api.get(f"{C}/payloads", params={"after": tail["cursor"]}).json()["events"] == []
    xadd(redis, "other/model", "v1", 200)
    new = xadd(redis, CONTRACT, "v1", 6)
    page = api.get(f"{C}/payloads", params={"after": tail["cursor"]}).json()
    assert (requests(page), page["cursor"]) == (["req-6"], new)
    middle = api.get(f"{C}/payloads", params={"after": logged[1], "count": 2}).json()
    assert (requests(middle), middle["cursor"]) == (["req-2", "req-3"], logged[3])


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/v1/contracts/no/such/payloads", {}, 404, None),
        (f"{C}/payloads", {"count": 0}, 422, "count"),
        (f"{C}/payloads", {"after": "yesterday"}, 422, "after"),
        (f"{C}/payloads", {"after": "9" * 25 + "-0"}, 422, "after"),
        (f"{C}/payloads", {"variant": "V 1"}, 422, "variant"),
    ],
)
def test_bad_reads_are_refused_naming_the_field(
    api: httpx.Client, logged: list[str], path: str, params: dict[str, Any], status: int,
    field: str | None,
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status
    if field is not None:
        assert response.json()["errors"][0]["field"] == field


def test_ffctl_logs_tails_in_every_format(
    admin: Ffctl, api: httpx.Client, logged: list[str]
) -> None:
    want = api.get(f"{C}/payloads", params={"count": 3, "variant": "v1"}).json()
    args = ["logs", CONTRACT, "--variant", "v1", "--count", "3"]
    assert json.loads(admin(*args, "-o", "json").stdout) == want
    assert yaml.safe_load(admin(*args, "-o", "yaml").stdout) == want
    table = admin(*args).stdout
    assert [r for r in ("req-0", "req-2", "req-4") if r in table] == ["req-0", "req-2", "req-4"]
    assert "req-3" not in table
    assert "input [1, 4] [0, 0.5, -1, 2]" in table and "4.2 ms" in table


def lines_of(stream: IO[str]) -> Iterator[str]:
    yield from iter(stream.readline, "")


def test_ffctl_logs_follow_prints_new_events_as_json_lines_until_interrupted(
    api_url: str, redis: Redis, logged: list[str], ffctl: Ffctl
) -> None:
    env = {k: v for k, v in {**os.environ, **ffctl.env}.items() if v is not None}
    env.update(FF_SERVER=api_url, FF_TOKEN=ADMIN)
    follower = subprocess.Popen(
        [sys.executable, "-m", "forestflow_cli", "logs", CONTRACT, "-f", "-n", "1", "-o", "json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: seen.extend(json.loads(line) for line in lines_of(follower.stdout)),  # type: ignore[arg-type]
        daemon=True,
    )
    reader.start()
    try:
        eventually(lambda: len(seen) >= 1, what="the tail")
        assert [e["request_id"] for e in seen] == ["req-5"]  # the tail, then what comes
        xadd(redis, "other/model", "v1", 300)
        for n in (6, 7):
            xadd(redis, CONTRACT, "v1", n)
        eventually(lambda: len(seen) >= 3, what="the new events")
        assert [e["request_id"] for e in seen] == ["req-5", "req-6", "req-7"]
    finally:
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=30)
        reader.join(timeout=30)
    assert code == 0, follower.stderr.read()  # type: ignore[union-attr]
