"""The payload log: events XADDed to the stream the runtimes write, read back through the
API's payloads endpoint and `ffctl logs`, filtered to one contract (and variant), tailed
and followed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from redis import Redis

from forestflow_control_plane.names import PAYLOAD_STREAM
from tests.support import eventually, free_port, serving

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


STARTED_S = 180.0  # a bound, not a budget: the CLI's first answer, on a loaded machine
STOPPED_S = 30.0  # a bound for the exit after SIGINT, which a follower answers at once
FOLLOW = ["-m", "forestflow_cli", "logs", CONTRACT, "-f", "-n", "1", "-o", "json"]
# The follower started as a POSIX shell starts a background job (`ffctl logs -f &` in a
# script): SIGINT ignored, which a Python process keeps unless it installs a handler itself.
SIGINT_IGNORED = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]


class Follower:
    """`ffctl logs -f -o json` in its own process, its JSON lines read as they come."""

    def __init__(self, env: dict[str, str], stderr: Path, sigint_ignored: bool) -> None:
        self._stderr_path = stderr
        self._stderr = stderr.open("w")  # a file, not a pipe nobody drains while it runs
        prefix = SIGINT_IGNORED if sigint_ignored else []
        self.process = subprocess.Popen(
            [*prefix, sys.executable, *FOLLOW], env=env, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True,
        )
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in iter(self.process.stdout.readline, ""):
            self.seen.append(json.loads(line))

    def requests(self) -> list[str]:
        return [e["request_id"] for e in self.seen]

    def interrupt(self) -> int:
        """SIGINT, then its exit code (killed after STOPPED_S, and the test fails)."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=STOPPED_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"ffctl logs -f still running {STOPPED_S:.0f} s after SIGINT")
        finally:
            self._reader.join(timeout=STOPPED_S)
            self._stderr.close()

    def stderr(self) -> str:
        return self._stderr_path.read_text()


def follower_env(ffctl: Ffctl, api_url: str) -> dict[str, str]:
    env = {k: v for k, v in {**os.environ, **ffctl.env}.items() if v is not None}
    env.update(FF_SERVER=api_url, FF_TOKEN=ADMIN)
    return env


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["sigint-default", "sigint-ignored"])
def test_ffctl_logs_follow_prints_new_events_as_json_lines_until_interrupted(
    api_url: str, redis: Redis, logged: list[str], ffctl: Ffctl, tmp_path: Path,
    sigint_ignored: bool,
) -> None:
    follower = Follower(follower_env(ffctl, api_url), tmp_path / "stderr", sigint_ignored)
    try:
        eventually(lambda: len(follower.seen) >= 1, STARTED_S, "the tail")
        assert follower.requests() == ["req-5"]  # the tail, then what comes
        xadd(redis, "other/model", "v1", 300)
        for n in (6, 7):
            xadd(redis, CONTRACT, "v1", n)
        eventually(lambda: len(follower.seen) >= 3, STARTED_S, "the new events")
        assert follower.requests() == ["req-5", "req-6", "req-7"]
    finally:
        code = follower.interrupt()
    assert code == 0, follower.stderr()


class HeldPoll:
    """An API that answers the tail (one event) and holds the next poll until released: a
    server slow to answer, the moment a follower must still stop at SIGINT."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if b"after=" in scope["query_string"]:
            self.held.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            page: dict[str, Any] = {"contract": CONTRACT, "events": [], "cursor": "1-0"}
        else:
            event = {
                "id": "1-0", "variant": "v1", "request_id": "req-0", "inputs": {},
                "outputs": {}, "latency_ms": 1.0, "time": 1_700_000_000.0,
            }
            page = {"contract": CONTRACT, "events": [event], "cursor": "1-0"}
        body = orjson.dumps(page)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def test_ffctl_logs_follow_stops_at_sigint_while_the_server_holds_its_poll(
    ffctl: Ffctl, tmp_path: Path
) -> None:
    api = HeldPoll()
    with serving(api, free_port()) as url:
        follower = Follower(follower_env(ffctl, url), tmp_path / "stderr", sigint_ignored=True)
        try:
            eventually(lambda: len(follower.seen) >= 1, STARTED_S, "the tail")
            assert follower.requests() == ["req-0"]
            assert api.held.wait(STARTED_S), "the follower never polled again"
        finally:
            code = follower.interrupt()
            api.release.set()
    assert code == 0, follower.stderr()
