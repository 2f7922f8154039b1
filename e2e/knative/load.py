"""The client load loop the cluster scenarios run throughout, as e2e/load.py does locally:
the same clients (e2e/load.py) calling the contract's Route back to back with Open
Inference Protocol v2 requests, counting every answer and every failure.

`url` is the Route's URL from its status; with FF_E2E_INGRESS set (e.g. http://127.0.0.1:80)
requests go there instead, with the Route's host as the Host header (sslip.io needs DNS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlparse

import httpx

from e2e.load import Tally, calling
from e2e.load import until_answered as answered

MODEL = "mlp"
ROWS = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]
BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                    "data": [x for row in ROWS for x in row]}]}
TIMEOUT_S = 60.0


def addressed(url: str) -> tuple[str, dict[str, str]]:
    """Where to send a request for `url`, and the headers that route it there."""
    if ingress := os.environ.get("FF_E2E_INGRESS"):
        return ingress.rstrip("/"), {"Host": urlparse(url).netloc}
    return url.rstrip("/"), {}


def infer_url(base: str) -> str:
    return f"{base}/v2/models/{MODEL}/infer"


def outputs(response: httpx.Response) -> tuple[float, ...]:
    """The flattened output tensor of one answer, to 4 places (a batch's size may move the
    last bits): which weights made it."""
    return tuple(round(float(x), 4) for x in response.json()["outputs"][0]["data"])


def version(response: httpx.Response) -> str:
    return str(response.json().get("model_version", "?"))


@contextlib.asynccontextmanager
async def load(route_url: str, clients: int = 4) -> AsyncIterator[Tally]:
    """Clients call the Route for as long as the block runs; the tally fills as they go."""
    base, headers = addressed(route_url)
    async with calling(
        infer_url(base), BODY, headers, clients, TIMEOUT_S, version_of=version
    ) as tally:
        yield tally


async def until_answered(tally: Tally, count: int, timeout: float = 120.0) -> None:
    """As locally, with a cluster's longer patience."""
    await answered(tally, count, timeout)


async def until(check: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    """Poll a blocking `check` off the event loop until it holds; fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(1.0)
