"""The gateway's bounds on the inference path, against real runtimes: a body over the limit
is refused before it is read, a replica that stops answering gives 504 at its deadline, and
a malformed request is a 400."""

from __future__ import annotations

import os
import signal
import socket

import httpx

from tests.support import eventually

from . import test_gateway as harness
from .test_gateway import INPUT, Harness, served

gateway, gw, mlp = harness.gateway, harness.gw, harness.mlp


def exchange(url: str, head: bytes) -> bytes:
    """Send `head` alone on a new connection; what comes back before the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b'"}' in answer:
                break
    return answer


def test_a_body_over_the_limit_is_refused_before_it_is_sent(gw: Harness) -> None:
    gw.deploy("bounded/scoring", {"v1": 100})
    url = gw.predict_url("bounded/scoring")
    eventually(lambda: served(gw, url), 60, "the contract to be served")
    path = url.removeprefix(gw.url)
    over = 64 * 2**20 + 1
    answer = exchange(gw.url, (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {over}\r\n\r\n{{\"input\": "
    ).encode())
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert f"body: {over} bytes, over the limit of {64 * 2**20}".encode() in answer
    assert httpx.post(url, json=INPUT).status_code == 200  # and the gateway serves on


def test_malformed_http_is_a_400(gw: Harness) -> None:
    assert exchange(gw.url, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_a_replica_that_stops_answering_gives_504_at_its_deadline(gw: Harness) -> None:
    gw.deploy("hung/scoring", {"v1": 100}, timeout_ms=300)
    url = gw.predict_url("hung/scoring")
    eventually(lambda: served(gw, url), 60, "the contract to be served")
    (pid,) = gw.runtime_pids("hung_")
    os.kill(pid, signal.SIGSTOP)  # alive, listening, answering nothing
    try:
        hung = httpx.post(url, json=INPUT, timeout=30)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert hung.status_code == 504
    assert hung.json() == {"error": "variant v1: no answer within 2.3 s"}
    assert httpx.post(url, json=INPUT, timeout=30).status_code == 200
