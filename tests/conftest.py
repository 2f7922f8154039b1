"""Shared fixtures: one real Redis for the session (REDIS_URL, or an embedded
redis-server), flushed before every test that uses it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis import Redis

from forestflow_control_plane.platforms.local.redis_server import start_redis, stop_redis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    home = tmp_path_factory.mktemp("redis")
    process, url = start_redis(home / "data", home / "redis.log")
    try:
        yield url
    finally:
        stop_redis(process)


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()

