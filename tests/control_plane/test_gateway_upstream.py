"""The gateway's client to a replica, against real TCP servers on 127.0.0.1 that answer as a
runtime does, or misbehave as a dying one does: whether a failure may be retried rests on
knowing that no byte of an answer came back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from forestflow_control_plane.platforms.local.gateway.upstream import Upstream, UpstreamError
from tests.support import free_port

REQUEST = b"POST /v1/m/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    b"3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n"
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A TCP server on 127.0.0.1 answering each request with `reply` (or misbehaving)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()


def replying(reply: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            await reader.readexactly(2)
            writer.write(reply)
            await writer.drain()

    return handler


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[Server, Upstream]]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[Server, Upstream]:
        server = Server(handler)
        port = free_port()
        servers.append(await asyncio.start_server(server.serve, "127.0.0.1", port))
        return server, Upstream("127.0.0.1", port)

    yield start
    for server in servers:
        server.close()


async def test_connections_are_kept_alive_and_reused(serve: Callable[..., Awaitable]) -> None:
    server, upstream = await serve(replying(OK))
    answers = [await upstream.send(REQUEST) for _ in range(3)]
    assert [(a.status, a.body) for a in answers] == [(200, b'{"a":1}')] * 3
    assert (b"content-type", b"application/json") in answers[0].headers
    assert server.connections == 1
    upstream.close()


async def test_concurrent_requests_each_get_a_connection(serve: Callable[..., Awaitable]) -> None:
    server, upstream = await serve(replying(OK))
    answers = await asyncio.gather(*(upstream.send(REQUEST) for _ in range(4)))
    assert {a.status for a in answers} == {200}
    assert server.connections == 4
    await upstream.send(REQUEST)
    assert server.connections == 4  # one of the four, kept alive
    upstream.close()


async def test_a_chunked_body_is_read_whole(serve: Callable[..., Awaitable]) -> None:
    _, upstream = await serve(replying(CHUNKED))
    answer = await upstream.send(REQUEST)
    assert answer.body == b'{"a":1}'
    upstream.close()


async def test_a_head_answer_ends_at_its_headers(serve: Callable[..., Awaitable]) -> None:
    _, upstream = await serve(replying(OK.split(b"\r\n\r\n")[0] + b"\r\n\r\n"))
    answer = await asyncio.wait_for(upstream.send(REQUEST, head_only=True), 5)
    assert (answer.status, answer.body) == (200, b"")
    assert (b"content-length", b"7") in answer.headers


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(OK[:40])
    await writer.drain()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"SMTP ready\r\n\r\n")
    await writer.drain()


FAILURES = [
    ("closed before answering", hang_up, "connection closed"),
    ("closed halfway through the answer", half_answer, "connection closed"),
    ("not HTTP", garbage, "bad response"),
]


@pytest.mark.parametrize(("name", "handler", "why"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_a_failed_exchange_is_an_upstream_error_saying_why(
    serve: Callable[..., Awaitable], name: str, handler: Handler, why: str
) -> None:
    _, upstream = await serve(handler)
    with pytest.raises(UpstreamError, match=why) as failed:
        await asyncio.wait_for(upstream.send(REQUEST), 5)
    assert failed.value.refused is False


async def test_a_refused_connection_says_nothing_listens() -> None:
    upstream = Upstream("127.0.0.1", free_port())
    with pytest.raises(UpstreamError, match="cannot connect") as failed:
        await upstream.send(REQUEST)
    assert failed.value.refused is True


async def test_an_answer_that_closes_the_connection_is_not_followed_on_it(
    serve: Callable[..., Awaitable],
) -> None:
    closing = OK.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)
    server, upstream = await serve(replying(closing))
    assert [(await upstream.send(REQUEST)).status for _ in range(2)] == [200, 200]
    assert server.connections == 2


async def test_reset_drops_idle_connections_and_close_ends_keep_alive(
    serve: Callable[..., Awaitable],
) -> None:
    server, upstream = await serve(replying(OK))
    await upstream.send(REQUEST)
    upstream.reset()  # after a failure: the kept connection is suspect
    await upstream.send(REQUEST)
    await upstream.send(REQUEST)
    assert server.connections == 2  # one new connection, kept alive again
    upstream.close()  # the replica is going: no connection outlives its exchange
    await upstream.send(REQUEST)
    await upstream.send(REQUEST)
    assert server.connections == 4
