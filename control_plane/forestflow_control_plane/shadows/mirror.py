"""The shadow mirror: replays sampled production requests to shadow variants and records
how their answers and latency compare with the primary's.

It only reads the payload stream the runtimes append to, so it never slows production.
A consumer group spreads the work over mirror replicas; each entry is acknowledged after
its result is recorded (at-least-once), and an entry a dead mirror left pending is claimed
by another once idle for `claim_idle_s`. A result is recorded in one MULTI/EXEC with a
short-lived mark of the entry, so a redelivered entry is never counted twice.

Latencies compare like for like: the primary's is its runtime's own time for the request
(queue and model, from the payload stream), and the shadow's the same figure, which its
runtime reports in the Server-Timing header; the mirror's round trip (gateway, network, its
own replays in flight) counts only for a shadow that does not report one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import re
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import numpy as np
import orjson
import redis.asyncio as aioredis
from prometheus_client import start_http_server
from redis import Redis
from redis.exceptions import RedisError, ResponseError, WatchError

from forestflow_control_plane import names
from forestflow_control_plane.policies.replay import ReplayPlan
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.shadows.agreement import MismatchError, compare
from forestflow_control_plane.shadows.exporter import MirrorMetrics
from forestflow_control_plane.shadows.plan import Plans
from forestflow_control_plane.shadows.results import Outcome, record
from forestflow_control_plane.shadows.targets import ShadowTargets
from forestflow_control_plane.state.store import Store

INFER_TIMING = re.compile(r"(?:^|,)\s*infer\s*;(?:[^,]*;)?\s*dur=([0-9]+(?:\.[0-9]+)?)")

log = logging.getLogger(__name__)
RETRY_S = 1.0

Entry = tuple[bytes, dict[bytes, bytes] | None]
Replies = list[tuple[bytes, list[Entry]]]




@dataclass(frozen=True)
class MirrorConfig:
    stream: str = names.PAYLOAD_STREAM
    group: str = "forestflow-mirror"
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    max_inflight: int = 32
    read_count: int = 64
    block_ms: int = 1000
    replay_timeout_s: float = 30.0
    claim_idle_s: float = 60.0
    plan_ttl_s: float = 5.0
    seen_ttl_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.claim_idle_s <= self.replay_timeout_s:
            raise ValueError(
                "claim_idle_s: must exceed replay_timeout_s, or entries still being replayed"
                " are claimed again"
            )


class BadEventError(ValueError):
    """A stream entry that is not a payload event."""


class ReplayError(RuntimeError):
    """The shadow refused the request or answered something that is not an answer."""


@dataclass(frozen=True)
class Event:
    contract: str
    variant: str
    request_id: str
    inputs: dict[str, Any]
    outputs: dict[str, np.ndarray]
    latency_ms: float


def parse_event(fields: dict[bytes, bytes]) -> Event:
    try:
        outputs = orjson.loads(fields[b"outputs"])
        return Event(
            contract=fields[b"contract"].decode(),
            variant=fields[b"variant"].decode(),
            request_id=fields[b"request_id"].decode(),
            inputs=orjson.loads(fields[b"inputs"]),
            outputs={n: np.asarray(t["data"]).reshape(t["shape"]) for n, t in outputs.items()},
            latency_ms=float(fields[b"latency_ms"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadEventError(f"not a payload event: {exc!r}") from None


class Mirror:
    def __init__(
        self,
        redis: aioredis.Redis,
        plans: Plans,
        targets: ShadowTargets,
        http: httpx.AsyncClient,
        metrics: MirrorMetrics,
        config: MirrorConfig,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._plans = plans
        self._targets = targets
        self._http = http
        self._metrics = metrics
        self._config = config
        self._draw = draw
        self._clock = clock
        self._slots = asyncio.Semaphore(config.max_inflight)
        self._inflight: dict[bytes, asyncio.Task[None]] = {}
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    async def run(self) -> None:
        """Consume until cancelled; entries still in flight then stay pending, for the next
        mirror to claim."""
        try:
            while True:
                try:
                    await self._ensure_group()
                    while True:
                        entries = await self._next_entries()
                        _honour_cancellation()
                        await self._dispatch(entries)
                except (RedisError, OSError) as exc:
                    _honour_cancellation()
                    log.warning("mirror: Redis failed, retrying: %s", exc)
                    await asyncio.sleep(RETRY_S)
        finally:
            for task in self._inflight.values():
                task.cancel()
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _ensure_group(self) -> None:
        """Create the group at the stream's end: a new mirror does not replay history."""
        try:
            await self._redis.xgroup_create(
                self._config.stream, self._config.group, id="$", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _next_entries(self) -> list[Entry]:
        if self._clock() >= self._next_claim:
            claimed = await self._claim()
            if claimed:
                return claimed
        replies = await self._redis.xreadgroup(
            self._config.group,
            self._config.consumer,
            {self._config.stream: ">"},
            count=self._config.read_count,
            block=self._config.block_ms,
        )
        return [entry for _, entries in cast(Replies, replies or []) for entry in entries]

    async def _claim(self) -> list[Entry]:
        """One page of entries pending on other consumers for longer than claim_idle_s;
        after the last page, wait before scanning again."""
        cursor, claimed, *_ = await self._redis.xautoclaim(
            self._config.stream,
            self._config.group,
            self._config.consumer,
            min_idle_time=int(self._config.claim_idle_s * 1000),
            start_id=self._claim_cursor,
            count=self._config.read_count,
        )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor == "0-0":
            self._next_claim = self._clock() + self._config.claim_idle_s / 2
        return [entry for entry in claimed if entry[0] not in self._inflight]

    async def _dispatch(self, entries: list[Entry]) -> None:
        """Start each entry once a slot is free: at most max_inflight in flight."""
        for entry_id, fields in entries:
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(entry_id, fields))
            self._inflight[entry_id] = task
            task.add_done_callback(functools.partial(self._done, entry_id))

    def _done(self, entry_id: bytes, _: asyncio.Task[None]) -> None:
        self._inflight.pop(entry_id, None)
        self._slots.release()

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> None:
        """Replay, record, acknowledge. A Redis failure leaves the entry pending (it is
        claimed again later); any other failure is logged and the entry dropped."""
        try:
            if fields:
                await self._mirror(entry_id.decode(), parse_event(fields))
            await self._redis.xack(self._config.stream, self._config.group, entry_id)
        except (RedisError, OSError) as exc:
            log.warning("mirror: entry %s left pending: %s", entry_id.decode(), exc)
        except Exception as exc:  # a bad event, or a bug: a retry would fail the same way
            unexpected = not isinstance(exc, BadEventError)
            log.warning("mirror: entry %s dropped: %s", entry_id.decode(), exc, exc_info=unexpected)
            with contextlib.suppress(RedisError, OSError):
                await self._redis.xack(self._config.stream, self._config.group, entry_id)

    async def _mirror(self, entry_id: str, event: Event) -> None:
        plan = await self._plans.get(event.contract)
        chosen = plan.replay_to(event.variant, self._draw) if plan else []
        if plan is None or not chosen or await self._redis.exists(names.mirror_seen_key(entry_id)):
            return
        _honour_cancellation()
        outcomes = list(await asyncio.gather(*(self._replay(plan, event, s) for s in chosen)))
        if await self._record(entry_id, outcomes):
            self._metrics.observe(outcomes)

    async def _replay(self, plan: ReplayPlan, event: Event, shadow: str) -> Outcome:
        """Send the primary's inputs to the shadow and compare; every failure is an
        error outcome, never an exception."""
        target = self._targets.target(plan.contract, shadow)
        headers = {"content-type": "application/json"}
        if target.host:
            headers["host"] = target.host
        latency_ms: float | None = None
        try:
            body = _infer_body(plan, event)
            started = time.perf_counter()
            response = await self._http.post(
                f"{target.url}/v2/models/{plan.model}/infer",
                content=body,
                headers=headers,
                timeout=self._config.replay_timeout_s,
            )
            if response.status_code != 200:
                raise ReplayError(f"HTTP {response.status_code}: {response.text[:200]}")
            latency_ms = _runtime_ms(response.headers.get("server-timing"))
            if latency_ms is None:
                latency_ms = (time.perf_counter() - started) * 1000
            agreement = compare(event.outputs, _outputs(response.content))
        except (httpx.HTTPError, ReplayError, MismatchError) as exc:
            log.debug("mirror: %s@%s: %s", plan.contract, shadow, exc)
            return Outcome(
                plan.contract, shadow, event.variant, event.latency_ms, latency_ms, None,
                str(exc) or type(exc).__name__,
            )
        return Outcome(
            plan.contract, shadow, event.variant, event.latency_ms, latency_ms, agreement
        )

    async def _record(self, entry_id: str, outcomes: list[Outcome]) -> bool:
        """Record the outcomes and mark the entry in one transaction; False when a mirror
        already recorded it."""
        key = names.mirror_seen_key(entry_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(key)
            if await pipe.exists(key):
                return False
            pipe.multi()
            pipe.set(key, 1, ex=int(self._config.seen_ttl_s))
            for outcome in outcomes:
                record(pipe, outcome)
            try:
                await pipe.execute()
            except WatchError:
                return False
        return True


def _honour_cancellation() -> None:
    """redis-py's asyncio client can swallow a cancellation that lands while it reads a
    reply (the call then returns normally): raise it here, or a stopped mirror runs on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _runtime_ms(server_timing: str | None) -> float | None:
    """The `infer` duration of a Server-Timing header (`infer;dur=1.234`), in ms."""
    match = INFER_TIMING.search(server_timing or "")
    return float(match.group(1)) if match else None


def _infer_body(plan: ReplayPlan, event: Event) -> bytes:
    """An Open Inference Protocol v2 request with the primary's inputs, typed as the
    contract declares them."""
    inputs = []
    for name, tensor in event.inputs.items():
        if name not in plan.datatypes:
            raise MismatchError(f"inputs.{name}: not an input of {plan.contract}")
        inputs.append(
            {
                "name": name,
                "datatype": plan.datatypes[name],
                "shape": tensor["shape"],
                "data": tensor["data"],
            }
        )
    return orjson.dumps({"id": event.request_id, "inputs": inputs})


def _outputs(content: bytes) -> dict[str, np.ndarray]:
    try:
        document = orjson.loads(content)
        return {
            o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in document["outputs"]
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ReplayError(f"outputs: not an inference answer: {exc!r}") from None


def run_mirror(
    settings: Settings, targets: ShadowTargets, config: MirrorConfig | None = None
) -> None:
    """The `mirror` process: consume until SIGTERM or SIGINT."""
    asyncio.run(_serve(settings, targets, config or MirrorConfig()))


async def _serve(settings: Settings, targets: ShadowTargets, config: MirrorConfig) -> None:
    metrics = MirrorMetrics()
    server = None
    if settings.mirror_metrics_port is not None:
        server, _ = start_http_server(
            settings.mirror_metrics_port, settings.api_host, metrics.registry
        )
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    store_redis = Redis.from_url(settings.redis_url)
    plans = Plans(Store(store_redis).get, config.plan_ttl_s)
    limits = httpx.Limits(max_connections=config.max_inflight * 4)
    try:
        async with (
            aioredis.Redis.from_url(settings.redis_url) as redis,
            httpx.AsyncClient(limits=limits) as http,
        ):
            mirror = Mirror(redis, plans, targets, http, metrics, config)
            with contextlib.suppress(asyncio.CancelledError):
                await mirror.run()
    finally:
        store_redis.close()
        if server is not None:
            server.shutdown()
