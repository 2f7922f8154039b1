"""The local platform's ingress + activator, one ASGI app: match the contract, split by the
Route's percents, hydrate the chosen variant if it is at zero, forward, and dehydrate
variants idle past their retention window."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import httpx
import orjson
import redis.asyncio as aioredis

from forestflow_control_plane import names
from forestflow_control_plane.platforms.local.platform import version_of
from forestflow_control_plane.platforms.local.pools import OverloadedError, Pools
from forestflow_control_plane.platforms.local.routing import (
    RouteTable,
    build_table,
    match_request,
    match_tag,
)
from forestflow_control_plane.platforms.local.supervisor import HydrationError, Supervisor
from forestflow_control_plane.resources import CONTRACT_LABEL
from forestflow_control_plane.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("forestflow.gateway")

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
     b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length"}
)
# The gateway's own server sets these on every response.
SERVER_SET = frozenset({b"date", b"server"})
REAP_INTERVAL_S = 0.2
RESYNC_INTERVAL_S = 5.0
VARIANT_HEADER = b"x-forestflow-variant"


class Gateway:
    def __init__(
        self, settings: Settings, hydrate_timeout: float = 120.0, use_zygote: bool = True
    ) -> None:
        self._settings = settings
        self._hydrate_timeout = hydrate_timeout
        self._use_zygote = use_zygote
        self._table = RouteTable({}, {})
        self._services: dict[str, dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._random = random.Random()

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
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
        )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, connect=5.0),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        self._supervisor = Supervisor(
            self._settings.home,
            self._client,
            self._use_zygote,
            {"FF_REDIS_URL": self._settings.redis_url},
        )
        await self._supervisor.open()
        self._pools = Pools(self._supervisor, self._hydrate_timeout)
        await self._sync()
        self._tasks = [
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._reap()),
        ]

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._pools.close()
        await self._supervisor.close()
        await self._publish_status()
        await self._session.close()
        await self._client.aclose()
        await self._redis.aclose()

    async def _sync(self) -> None:
        """Reload the Route and Service objects and stop runtimes of removed services."""
        raw_services, raw_routes = await asyncio.gather(
            self._redis.hgetall(names.LOCAL_SERVICES), self._redis.hgetall(names.LOCAL_ROUTES)
        )
        services = {_text(k): orjson.loads(v) for k, v in raw_services.items()}
        routes = [orjson.loads(v) for v in raw_routes.values()]
        self._services = services
        self._table = build_table(routes, services.values())
        for pool in self._pools.sync(services):
            await self._pools.stop_pool(pool)
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

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            if await self._pools.reap():
                with contextlib.suppress(OSError, aioredis.RedisError):
                    await self._publish_status()

    async def _publish_status(self) -> None:
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

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/healthz":
            await _respond(send, 200, {"status": "ok"})
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        match = match_request(host, path, self._settings.domain)
        if match is None:
            await _respond(send, 404, {"error": f"no contract matches {host}{path}"})
            return
        match = match_tag(match, self._table)
        target = self._table.resolve(match, self._random.random(), headers)
        if target is None:
            await _respond(send, 404, {"error": f"contract {match.contract} has no traffic"})
            return
        body = await _read_body(receive)
        try:
            async with self._pools.replica(target.service) as replica:
                await self._forward(scope, match.path, body, replica.url, target.version, send)
        except HydrationError as exc:
            await _respond(send, 503, {"error": f"variant failed to start: {exc}"})
        except OverloadedError as exc:
            await _respond(send, 503, {"error": str(exc)}, retry_after=True)

    async def _forward(
        self, scope: Scope, path: str, body: bytes, base: str, version: str, send: Send
    ) -> None:
        query = scope.get("query_string", b"")
        url = base + path + ("?" + query.decode("latin-1") if query else "")
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k not in HOP_BY_HOP
        ]
        try:
            async with self._session.request(
                scope["method"], url, headers=headers, data=body
            ) as response:
                content = await response.read()
                status = response.status
                raw = response.raw_headers
        except aiohttp.ClientError as exc:
            await _respond(send, 502, {"error": f"variant {version} unreachable: {exc}"})
            return
        out = [
            (k.lower(), v)
            for k, v in raw
            if k.lower() not in HOP_BY_HOP and k.lower() not in SERVER_SET
        ]
        out.append((VARIANT_HEADER, version.encode()))
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": content})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, payload: dict[str, Any], retry_after: bool = False
) -> None:
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
