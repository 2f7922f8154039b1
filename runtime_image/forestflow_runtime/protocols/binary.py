"""The binary tensor data extension of OIP v2 (Triton's), for inputs and outputs.

A body whose Inference-Header-Content-Length header is N holds N bytes of JSON followed by the
raw tensors, in input order, each as long as its parameters.binary_data_size says.
"""

from dataclasses import dataclass

from forestflow_runtime.errors import InvalidRequest
from forestflow_runtime.http import Request

HEADER = b"inference-header-content-length"


@dataclass(frozen=True, slots=True)
class SplitBody:
    json: bytes | memoryview
    binary: memoryview


def split_body(request: Request) -> SplitBody:
    raw = request.headers.get(HEADER)
    if raw is None:
        return SplitBody(request.body, memoryview(b""))
    try:
        length = int(raw)
    except ValueError:
        raise InvalidRequest(f"Inference-Header-Content-Length: not an integer: {raw!r}") from None
    if not 0 <= length <= len(request.body):
        raise InvalidRequest(
            f"Inference-Header-Content-Length: {length} outside a body of {len(request.body)} bytes"
        )
    view = memoryview(request.body)
    return SplitBody(view[:length], view[length:])


class BinaryReader:
    """Hands out consecutive slices of the binary part, checking it is used up exactly."""

    def __init__(self, binary: memoryview) -> None:
        self.binary = binary
        self.offset = 0

    def take(self, field: str, size: object) -> memoryview:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest(f"{field}.parameters.binary_data_size: not a size: {size!r}")
        end = self.offset + size
        if end > len(self.binary):
            raise InvalidRequest(
                f"{field}.parameters.binary_data_size: {size} bytes past the end of the body"
            )
        chunk = self.binary[self.offset : end]
        self.offset = end
        return chunk

    def finish(self) -> None:
        if self.offset != len(self.binary):
            extra = len(self.binary) - self.offset
            raise InvalidRequest(f"body: {extra} binary bytes not claimed by any input")
