"""The local platform's ingress + activator, one ASGI app: match the contract, tag URL or
Service, split by the Route's percents, take a ready replica (or wait for one to start),
forward, count. Which replicas run is the pools' business; this module is the request path,
the gateway's own endpoints (/healthz, /metrics) and the loops that keep routes and pools
current.

A request whose replica refused, dropped or garbled the exchange before its whole answer
came back (the replica just died, even halfway through its answer, or closed a kept-alive
connection as it was reused) is sent again, to another replica or a new one: inference is
idempotent, and the client has seen nothing, as answers are forwarded only once whole. A
replica that refused leaves the pool at once, so a dying replica costs a request at most its
two resends. A third such failure is answered 502; a variant that cannot start is answered
503 (with Retry-After while its restarts back off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from forestflow_control_plane import names
from forestflow_control_plane.knative.annotations import CONTRACT_LABEL
from forestflow_control_plane.platforms.local.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from forestflow_control_plane.platforms.local.gateway.pools import (
    OverloadedError,
    Pool,
    Pools,
    RemovedError,
    RestartingError,
)
from forestflow_control_plane.platforms.local.gateway.routing import (
    Draws,
    Match,
    RouteTable,
    Target,
    build_table,
    match_request,
)
from forestflow_control_plane.platforms.local.gateway.upstream import UpstreamError
from forestflow_control_plane.platforms.local.platform import version_of
from forestflow_control_plane.platforms.local.supervisor import HydrationError, Supervisor
from forestflow_control_plane.settings import Settings
from forestflow_control_plane.state.text import text

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("forestflow.gateway")

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
     b"trailers", b"transfer-encoding", b"upgrade", b"content-length"}
)
# Not forwarded: the body is read whole before it is sent on, so `expect` is answered here.
REQUEST_DROPPED = HOP_BY_HOP | {b"expect"}
# The gateway's own server sets these on every response.
RESPONSE_DROPPED = HOP_BY_HOP | {b"date", b"server"}
HEAD_RESPONSE_DROPPED = RESPONSE_DROPPED - {b"content-length"}
TICK_S = 0.2
MAX_SENDS = 3  # a request unanswered by replicas that fail is sent at most this often
RESYNC_INTERVAL_S = 5.0
RUNTIME_DEADLINE_MS = 30000.0  # the runtime's FF_REQUEST_TIMEOUT_MS default
ANSWER_GRACE_S = 2.0
VARIANT_HEADER = b"x-forestflow-variant"
JSON = b"application/json"


class Gateway:
    def __init__(
        self,
        settings: Settings,
        hydrate_timeout: float = 120.0,
        use_zygote: bool = True,
    ) -> None:
        self._settings = settings
        self._hydrate_timeout = hydrate_timeout
        self._use_zygote = use_zygote
        self._table = RouteTable({}, {}, {})
        self._services: dict[str, dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._draws = Draws()
        self._metrics = GatewayMetrics(lambda: self._pools.gauges(self._percent))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        self._redis = aioredis.Redis.from_url(self._settings.redis_url)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
        self._supervisor = Supervisor(
            self._settings.home,
            self._client,
            self._use_zygote,
            {"FF_REDIS_URL": self._settings.redis_url},
        )
        await self._supervisor.open()
        self._pools = Pools(self._supervisor, self._metrics, self._hydrate_timeout)
        await self._sync()
        self._tasks = [
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._tick()),
        ]

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._pools.close()
        await self._supervisor.close()
        await self._publish_status()
        await self._client.aclose()
        await self._redis.aclose()

    async def _sync(self) -> None:
        """Reload the Route and Service objects; the pools follow the services."""
        raw_services, raw_routes = await asyncio.gather(
            self._redis.hgetall(names.LOCAL_SERVICES), self._redis.hgetall(names.LOCAL_ROUTES)
        )
        services = {text(k): orjson.loads(v) for k, v in raw_services.items()}
        routes = [orjson.loads(v) for v in raw_routes.values()]
        self._services = services
        self._table = build_table(routes, services.values())
        self._draws.forget(set(self._table.routes))
        self._pools.sync(services)
        await self._publish_status()

    async def _watch(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(names.LOCAL_CHANGED)
                    await self._sync()
                    while True:
                        # A change message, or the periodic resync on timeout.
                        await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=RESYNC_INTERVAL_S
                        )
                        await self._sync()
            except (OSError, aioredis.RedisError) as exc:
                log.warning("route watch lost Redis (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._pools.tick()
            if self._pools.changed:
                with contextlib.suppress(OSError, aioredis.RedisError):
                    await self._publish_status()

    async def _publish_status(self) -> None:
        self._pools.changed = False
        rows: dict[Any, bytes] = {}
        for key, (ready, replicas) in self._pools.status().items():
            service = self._services.get(key)
            if service is None:
                continue
            labels = service["metadata"]["labels"]
            rows[key] = orjson.dumps(
                {"contract": labels[CONTRACT_LABEL], "version": version_of(service),
                 "ready": ready, "replicas": replicas}
            )
        pipe = self._redis.pipeline()
        pipe.delete(names.LOCAL_STATUS)
        if rows:
            pipe.hset(names.LOCAL_STATUS, mapping=rows)
        await pipe.execute()

    def _percent(self, service: str) -> int:
        target = self._table.services.get(service)
        return target.percent if target is not None else 0

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/healthz":
            await _respond(send, 200, {"status": "ok"})
            return
        if path == "/metrics":
            body = self._metrics.exposition()
            await _send(send, 200, [(b"content-type", CONTENT_TYPE.encode())], body)
            return
        began = time.perf_counter()
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        raw_path = scope.get("raw_path")
        target_path = raw_path.decode("latin-1") if raw_path else path
        match = match_request(host, target_path, self._settings.domain)
        if match is None:
            await _respond(send, 404, {"error": f"no contract matches {host}{path}"})
            return
        match = self._table.refine(match)
        routed = self._route(match, headers)
        if routed is None:
            return await _no_traffic(send, match)
        target, pool = routed
        try:
            body = await _read_body(receive, headers, self._settings.max_request_bytes)
        except TooLargeError as exc:
            status = await _respond(send, 413, {"error": str(exc)})
            pool.metrics.answered(status, time.perf_counter() - began)
            return
        request = _request(scope, match.path, body)
        while True:
            try:
                status = await self._proxy(pool, request, target.version, scope["method"], send)
                break
            except RemovedError as exc:  # it left the Route while the request waited for it
                log.info("routing again: %s", exc)
                if (routed := self._route(match, headers)) is None:
                    return await _no_traffic(send, match)
                target, pool = routed
        pool.metrics.answered(status, time.perf_counter() - began)

    def _route(self, match: Match, headers: dict[bytes, bytes]) -> tuple[Target, Pool] | None:
        """Where the Route sends the request now: the version and its pool."""
        target = self._table.resolve(match, self._draws, headers)
        pool = self._pools.get(target.service) if target is not None else None
        return None if target is None or pool is None else (target, pool)

    async def _proxy(
        self, pool: Pool, request: bytes, version: str, method: str, send: Send
    ) -> int:
        """Forward to a replica, again after a fresh failure (see the module's docstring);
        return the status sent. RemovedError: the variant went before a replica took it."""
        failed = 0
        while True:
            member = pool.take()
            try:
                if member is None:
                    member = await self._pools.wait(pool)
            except HydrationError as exc:
                return await _respond(send, 503, {"error": f"variant failed to start: {exc}"})
            except RestartingError as exc:
                retry = str(max(1, math.ceil(exc.retry_after)))
                return await _respond(send, 503, {"error": str(exc)}, retry_after=retry)
            except OverloadedError as exc:
                return await _respond(send, 503, {"error": str(exc)}, retry_after="1")
            timeout = _answer_timeout_s(pool)
            try:
                async with asyncio.timeout(timeout):
                    answer = await member.upstream.send(request, head_only=method == "HEAD")
            except TimeoutError:
                # Past the replica's own deadline, unanswered: hung, not slow. Its connection
                # is closed; not sent again, as it may have done the work.
                return await _respond(send, 504, {
                    "error": f"variant {version}: no answer within {timeout:g} s"
                })
            except UpstreamError as exc:
                await self._pools.lost(pool, member, exc.refused)
                failed += 1
                if failed == MAX_SENDS:
                    return await _respond(send, 502, {"error": f"variant {version}: {exc}"})
                log.info("%s: sending again: %s", pool.key, exc)
                continue
            finally:
                pool.give_back(member)
            if method == "HEAD":  # the replica's content-length stands: the body it omits
                out = [(k, v) for k, v in answer.headers if k not in HEAD_RESPONSE_DROPPED]
            else:
                out = [(k, v) for k, v in answer.headers if k not in RESPONSE_DROPPED]
                out.append((b"content-length", b"%d" % len(answer.body)))
            out.append((VARIANT_HEADER, version.encode()))
            await send({"type": "http.response.start", "status": answer.status, "headers": out})
            await send({"type": "http.response.body", "body": answer.body})
            return answer.status


async def _no_traffic(send: Send, match: Match) -> None:
    what = "service" if match.service else "contract"
    await _respond(send, 404, {"error": f"{what} {match.name} has no traffic"})


def _answer_timeout_s(pool: Pool) -> float:
    """How long a replica may take to answer: its own request deadline, by which it answers
    504 itself, and a grace for that answer to arrive."""
    deadline_ms = float(pool.spec.env.get("FF_REQUEST_TIMEOUT_MS", RUNTIME_DEADLINE_MS))
    return deadline_ms / 1000 + ANSWER_GRACE_S


def _request(scope: Scope, path: str, body: bytes) -> bytes:
    """The whole HTTP/1.1 request for the replica: the client's headers less hop-by-hop."""
    query = scope.get("query_string", b"")
    parts = [scope["method"].encode(), b" ", path.encode("latin-1")]
    if query:
        parts += (b"?", query)
    parts.append(b" HTTP/1.1\r\n")
    host = False
    for name, value in scope["headers"]:
        if name not in REQUEST_DROPPED:
            parts += (name, b": ", value, b"\r\n")
            host = host or name == b"host"
    if not host:
        parts.append(b"host: 127.0.0.1\r\n")
    parts += (b"content-length: %d\r\n\r\n" % len(body), body)
    return b"".join(parts)


class TooLargeError(ValueError):
    """A request body over FF_MAX_REQUEST_BYTES."""


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The whole body, unless it is over `limit` bytes: TooLargeError as soon as the
    declared length or the bytes received so far say so."""
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        raise TooLargeError(f"body: {int(declared)} bytes, over the limit of {limit}")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body
    chunks, size = [body], len(body)
    while True:
        if size > limit:
            raise TooLargeError(f"body: over the limit of {limit} bytes")
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])


async def _respond(
    send: Send, status: int, payload: dict[str, Any], retry_after: str | None = None
) -> int:
    headers = [(b"content-type", JSON)]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    return await _send(send, status, headers, orjson.dumps(payload))


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status
