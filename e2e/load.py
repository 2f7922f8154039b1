"""The client load loop every scenario runs throughout: a few clients calling the contract
back to back, counting every answer and every failure, transport errors included. The
cluster scenarios (e2e/knative/load.py) run the same loop against a Route."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .conftest import LocalPlatform

INPUT = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]
ERROR_PAUSE_S = 0.05


def header_version(response: httpx.Response) -> str:
    """The version that answered, as the local gateway says it."""
    return response.headers.get("x-forestflow-variant", "?")


@dataclass
class Tally:
    """`answers` in the order they came back; `sent_at[i]` (the event loop's clock) and
    `latencies_ms[i]` belong to `answers[i]`. Answers come back out of the order they were
    sent (one waits on a replica starting while others are served), so what a change of
    routing guarantees is read by send time (`sent_since`), never from the last answer."""

    version_of: Callable[[httpx.Response], str] = header_version
    answers: list[httpx.Response] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    # A transport error's (sent, failed) times: whether a process died with it in flight.
    errors_at: list[tuple[float, float]] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """Every request that did not get a 200, with what it got instead."""
        bad = [f"{r.status_code} {r.text[:200]}" for r in self.answers if r.status_code != 200]
        return bad + self.errors

    @property
    def total(self) -> int:
        return len(self.answers) + len(self.errors)

    def ok(self) -> list[httpx.Response]:
        return [r for r in self.answers if r.status_code == 200]

    def served(self) -> Counter[str]:
        return Counter(self.version_of(r) for r in self.ok())

    def sent_since(self, moment: float) -> list[httpx.Response]:
        """The answers to requests sent at `moment` (the event loop's clock) or later."""
        return [r for r, sent in zip(self.answers, self.sent_at, strict=True) if sent >= moment]

    def summary(self, scenario: str) -> str:
        served = ", ".join(f"{v} {n}" for v, n in sorted(self.served().items()))
        return f"scenario {scenario}: {self.total} requests, {len(self.failures)} failed ({served})"


async def _client_loop(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str],
    stop: asyncio.Event, tally: Tally, pause_s: float,
) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        if pause_s:
            await asyncio.sleep(pause_s)
        started = loop.time()
        try:
            response = await client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            tally.errors.append(f"{type(exc).__name__}: {exc}")
            tally.errors_at.append((started, loop.time()))
            await asyncio.sleep(ERROR_PAUSE_S)  # a gateway that is down is not called hot
            continue
        tally.latencies_ms.append((loop.time() - started) * 1000)
        tally.sent_at.append(started)
        tally.answers.append(response)


@contextlib.asynccontextmanager
async def calling(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    clients: int = 4,
    timeout: float = 60.0,
    version_of: Callable[[httpx.Response], str] = header_version,
    pause_s: float = 0.0,
) -> AsyncIterator[Tally]:
    """`clients` POST `body` to `url` for as long as the block runs, each `pause_s` between
    its answer and its next request; the tally fills as they go."""
    tally, stop = Tally(version_of), asyncio.Event()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        loops = [
            asyncio.create_task(
                _client_loop(client, url, body, headers or {}, stop, tally, pause_s)
            )
            for _ in range(clients)
        ]
        try:
            yield tally
        finally:
            stop.set()
            await asyncio.gather(*loops)


@contextlib.asynccontextmanager
async def load(
    platform: LocalPlatform, clients: int = 4, pause_s: float = 0.0
) -> AsyncIterator[Tally]:
    """Clients call the local contract through the gateway while the block runs."""
    url = f"{platform.gateway}/contracts/examples/mlp/v1/mlp/predict"
    async with calling(url, {"input": INPUT}, clients=clients, pause_s=pause_s) as tally:
        yield tally


async def until_answered(tally: Tally, count: int, timeout: float = 60.0) -> None:
    """Wait until the clients have `count` more answers than now: traffic is really flowing."""
    target = tally.total + count
    async with asyncio.timeout(timeout):
        while tally.total < target:
            await asyncio.sleep(0.02)


async def until_sent_since(
    tally: Tally, moment: float, count: int, version: str | None = None, timeout: float = 180.0
) -> None:
    """Wait until `count` requests sent at `moment` or later have their answers, from
    `version` if given (the first may wait on a replica starting: a bound, not a budget)."""

    def answered() -> int:
        sent = tally.sent_since(moment)
        return len(sent if version is None else [r for r in sent if tally.version_of(r) == version])

    async with asyncio.timeout(timeout):
        while answered() < count:
            await asyncio.sleep(0.02)
