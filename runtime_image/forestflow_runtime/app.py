"""The ASGI application: routing, error-to-status mapping, metrics and lifespan in one place.

Errors raised by the core carry meaning; this edge alone turns them into HTTP statuses. The
model loads in a background task after startup, so /v2/health/live answers (and readiness says
503) while it loads and warms up.
"""

import asyncio
import logging
import time
from collections.abc import Callable

import orjson

from forestflow_runtime.config import RuntimeConfig
from forestflow_runtime.dataplane import DataPlane
from forestflow_runtime.disconnect import DisconnectWatch
from forestflow_runtime.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ModelFailed,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    QueueFull,
    RuntimeServingError,
)
from forestflow_runtime.http import Request, Response, json_response, read_body, send_response
from forestflow_runtime.metrics import CONTENT_TYPE, RuntimeMetrics
from forestflow_runtime.openapi import DOCS_HTML, build_openapi
from forestflow_runtime.protocols.plain import PlainEndpoints
from forestflow_runtime.protocols.v1 import V1Endpoints
from forestflow_runtime.protocols.v2 import V2Endpoints
from forestflow_runtime.routing import MethodNotAllowed, Route, Router, route
from forestflow_runtime.streaming import StreamConsumer
from forestflow_runtime.types import Receive, Scope, Send

log = logging.getLogger("forestflow_runtime")

STATUS: dict[type[RuntimeServingError], int] = {
    InvalidRequest: 400,
    PayloadTooLarge: 413,
    ModelNotFound: 404,
    ModelNotReady: 503,
    QueueFull: 503,
    DeadlineExceeded: 504,
    ModelFailed: 500,
    ModelLoadError: 500,
}
_RETRY_AFTER = ((b"retry-after", b"1"),)
CLIENT_GONE = 499  # nginx's code, for the latency metric only: nobody receives it


def error_response(exc: RuntimeServingError) -> Response:
    status = STATUS.get(type(exc), 500)
    headers = _RETRY_AFTER if status == 503 else ()
    return Response(status, orjson.dumps({"error": str(exc)}), headers=headers)


class RuntimeApp:
    def __init__(
        self, config: RuntimeConfig, on_fatal: Callable[[BaseException], None] | None = None
    ) -> None:
        self.config = config
        self.metrics = RuntimeMetrics(config.model_name, config.contract, config.variant)
        self.plane = DataPlane(config, self.metrics)
        self.stream = (
            StreamConsumer(config.stream, self.plane, self.metrics) if config.stream.input else None
        )
        self.on_fatal = on_fatal
        routes = [
            *V2Endpoints(self.plane).routes(),
            *V1Endpoints(self.plane).routes(),
            *PlainEndpoints(self.plane).routes(),
            route("GET", "/metrics", self._metrics),
            route("GET", "/openapi.json", self._openapi),
            route("GET", "/docs", self._docs),
        ]
        # Inference routes are matched first: they are nearly all the traffic.
        self.router = Router(sorted(routes, key=lambda r: not r.is_inference))
        self._openapi_body = orjson.dumps(build_openapi(config.model_name, config.inputs))
        self._loader: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        try:
            found = self.router.match(method, path)
        except MethodNotAllowed as exc:
            await send_response(send, json_response(405, {"error": str(exc)}))
            return
        if found is None:
            await send_response(send, json_response(404, {"error": f"no route for {path}"}))
            return
        matched, params = found
        headers = dict(scope["headers"])
        try:
            body = await read_body(receive, headers, self.config.max_request_bytes)
        except PayloadTooLarge as exc:
            await send_response(send, error_response(exc))
            return
        request = Request(method, path, headers, body, params)
        if not matched.is_inference:
            await send_response(send, await self._handle(matched, request))
            return
        response = await self._watched(matched, request, receive)
        status = CLIENT_GONE if response is None else response.status
        self.metrics.request(matched.protocol, status, time.perf_counter() - started)
        if response is not None:
            await send_response(send, response)

    async def _handle(self, matched: Route, request: Request) -> Response:
        try:
            return await matched.handler(request)
        except RuntimeServingError as exc:
            return error_response(exc)
        except Exception as exc:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return json_response(500, {"error": f"internal error: {exc!r}"})

    async def _watched(self, matched: Route, request: Request, receive: Receive) -> Response | None:
        """Run an inference handler, cancelling it if the client disconnects meanwhile.

        The cancelled handler's Future is then cancelled too, and the batcher skips it.
        None means the client is gone and nothing should be sent.
        """
        task = asyncio.current_task()
        assert task is not None
        watch = DisconnectWatch(task, receive)
        try:
            return await self._handle(matched, request)
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            task.uncancel()
            return None
        finally:
            watch.close()

    async def _metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE.encode())

    async def _openapi(self, request: Request) -> Response:
        return Response(200, self._openapi_body)

    async def _docs(self, request: Request) -> Response:
        return Response(200, DOCS_HTML, b"text/html; charset=utf-8")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.plane.start()
                if self.stream is not None:
                    self.stream.start()
                self._loader = asyncio.get_running_loop().create_task(self._load())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._loader is not None and not self._loader.done():
                    self._loader.cancel()
                if self.stream is not None:  # first: its in-flight messages need the batcher
                    await self.stream.close()
                await self.plane.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            await self.plane.load()
        except Exception as exc:
            log.error("model %s failed to load: %s", self.config.model_name, exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)
            return
        log.info(
            "ready: model %s (%s, %s) loaded in %.3fs, serving on %s:%d",
            self.config.model_name,
            self.plane.platform,
            self.config.source.uri,
            time.perf_counter() - started,
            self.config.host,
            self.config.port,
        )
