"""The gateway's client to one runtime replica: HTTP/1.1 over kept-alive connections, with
httptools (uvicorn's parser) reading the answers. It speaks what the gateway needs and no
more: a buffered request out, a whole response back (content-length or chunked). A general
client (aiohttp) spends several times the CPU per request on URL, header and timer objects
the proxy never uses (bench/gateway_bench.py)."""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

CONNECT_TIMEOUT_S = 5.0


class UpstreamError(ConnectionError):
    """The replica refused, dropped or garbled the exchange. `refused` is True when the
    connection was refused: nothing listens there any more."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class Answer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time; httptools calls the on_* methods."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._head_only = False

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def exchange(self, request: bytes, head_only: bool) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._headers, self._body = [], []
        self._head_only = head_only
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(f"connection closed ({exc or 'by the replica'})")

    def eof_received(self) -> None:
        self.closed = True  # the transport closes itself, and connection_lost follows

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad response: {exc}")
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self._head_only:  # a HEAD answer has no body, which the parser cannot know
            self.on_message_complete()
            self.close()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self._parser.should_keep_alive():
            self.close()
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        waiter.set_result(Answer(self._parser.get_status_code(), self._headers, body))

    def _fail(self, why: str) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamError(why))


class Upstream:
    """Kept-alive connections to one replica, reused newest first."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._idle: list[_Connection] = []
        self._closed = False

    async def send(self, request: bytes, head_only: bool = False) -> Answer:
        """Send one whole request (head and body) and return the whole answer."""
        connection = self._idle.pop() if self._idle else None
        while connection is not None and not connection.usable:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = await self._connect()
        try:
            answer = await connection.exchange(request, head_only)
        except BaseException:
            connection.close()  # cancelled mid-exchange: the connection's state is unknown
            raise
        if self._closed:
            connection.close()
        elif connection.usable:
            self._idle.append(connection)
        return answer

    def reset(self) -> None:
        """Close the idle connections, suspect after a failed exchange; new ones are made as
        needed."""
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    def close(self) -> None:
        """Close the idle connections now, and those in use when their exchange ends."""
        self._closed = True
        self.reset()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, connection = await loop.create_connection(_Connection, self._host, self._port)
        except (OSError, TimeoutError) as exc:
            # A timeout is a replica too busy to accept, not one that is gone.
            refused = isinstance(exc, ConnectionRefusedError)
            where = f"{self._host}:{self._port}"
            raise UpstreamError(
                f"cannot connect to {where}: {exc}", refused=refused
            ) from None
        return connection
