"""Schemathesis over the API's own OpenAPI spec: whatever the input, never a 500, and every
answer (errors included) is one the spec documents, in the shape it documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from redis import Redis
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from forestflow_control_plane.api.app import create_app
from forestflow_control_plane.api.auth import load_tokens
from forestflow_control_plane.composition import Parts
from forestflow_control_plane.settings import Settings
from tests.support import free_port, serving

TOKEN = "fuzz-admin-token-0123456789"
# Not `positive_data_acceptance`: a schema-valid model.yaml may still be refused (422 for an
# artifact missing on disk, 409 for a version deployed with another spec).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schemathesis.serializer("application/yaml")
def _yaml(ctx: Any, value: Any) -> bytes:
    return yaml.safe_dump(value).encode()


@pytest.fixture
def api_url(redis: Redis, redis_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path, redis_url=redis_url)
    app = create_app(Parts(settings), load_tokens({"FF_ADMIN_TOKEN": TOKEN}))
    with serving(app, free_port()) as url:
        yield url


@pytest.mark.parametrize(
    ("mode", "checks"),
    [
        (GenerationMode.POSITIVE, CHECKS),
        (GenerationMode.NEGATIVE, [*CHECKS, negative_data_rejection]),
    ],
)
def test_no_input_gives_a_server_error(
    api_url: str, mode: GenerationMode, checks: list[Any]
) -> None:
    """Every operation, fed what its schema allows, then what it does not (schemathesis +
    hypothesis): no 500, and only answers the spec documents."""
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not list(operation.iter_parameters()):
            continue  # nothing to get wrong (healthz, the contract list)

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def no_server_error(case: Any) -> None:
            response = case.call(headers={"authorization": f"Bearer {TOKEN}"})
            assert response.status_code < 500, (case.method, case.path, response.text)
            case.validate_response(response, checks=checks)

        no_server_error()
