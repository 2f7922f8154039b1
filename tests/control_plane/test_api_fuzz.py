"""Schemathesis over the API's own OpenAPI spec: whatever the input, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from redis import Redis

from forestflow_control_plane.api import create_app
from forestflow_control_plane.auth import load_tokens
from forestflow_control_plane.settings import Settings
from tests.support import free_port, serving

TOKEN = "fuzz-admin-token-0123456789"


@schemathesis.serializer("application/yaml")
def _yaml(ctx: Any, value: Any) -> bytes:
    return yaml.safe_dump(value).encode()


@pytest.fixture
def api_url(redis: Redis, redis_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path, redis_url=redis_url)
    app = create_app(settings, load_tokens({"FF_ADMIN_TOKEN": TOKEN}))
    with serving(app, free_port()) as url:
        yield url


def test_no_input_gives_a_server_error(api_url: str) -> None:
    """Every operation, fed what its schema allows and more (schemathesis + hypothesis)."""
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case: Any) -> None:
            response = case.call(headers={"authorization": f"Bearer {TOKEN}"})
            assert response.status_code < 500, (case.method, case.path, response.text)

        no_server_error()
