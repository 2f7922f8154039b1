"""The small slice of HTTP the runtime needs: a read request, a response, and sending it.

Raw ASGI instead of a framework: the inference path is benchmarked against a bare uvicorn app,
so per-request work is one body read, one dict of headers and two send calls.
"""

from dataclasses import dataclass, field

import orjson

from forestflow_runtime.errors import InvalidRequest, PayloadTooLarge
from forestflow_runtime.types import Receive, Send

JSON = b"application/json"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[bytes, bytes]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def timeout_s(self, default_s: float) -> float:
        """Per-request deadline from X-Request-Timeout-Ms, never longer than the server's."""
        raw = self.headers.get(b"x-request-timeout-ms")
        if raw is None:
            return default_s
        try:
            value = float(raw) / 1000.0
        except ValueError:
            raise InvalidRequest(f"X-Request-Timeout-Ms: not a number: {raw.decode()!r}") from None
        if not value > 0:
            raise InvalidRequest("X-Request-Timeout-Ms: must be positive")
        return min(value, default_s)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def json_response(
    status: int, document: object, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> Response:
    body = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(status, body, JSON, headers)


def server_timing(seconds: float) -> tuple[bytes, bytes]:
    """The W3C Server-Timing header with the inference's time in this runtime, in ms."""
    return (b"server-timing", b"infer;dur=%.3f" % (seconds * 1000))


def decode_object(body: bytes | memoryview) -> dict[str, object]:
    """A JSON object body; anything else is a 400."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body: malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest(f"body: expected a JSON object, got {type(document).__name__}")
    return document


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The whole body, unless it is over `limit` bytes: then PayloadTooLarge, as soon as the
    declared length or the bytes received so far say so."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body: {int(declared)} bytes, over the limit of {limit}")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body
    chunks, size = [body], len(body)
    while True:
        if size > limit:
            raise PayloadTooLarge(f"body: over the limit of {limit} bytes")
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])


async def send_response(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
