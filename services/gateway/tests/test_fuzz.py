"""Property-based run over the OpenAPI schema against the gateway as a real process: whatever
the input, no 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from cofounder_gateway.auth import mint_token
from cofounder_gateway.settings import DEV_SECRET

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api_schema(gateway_process: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{gateway_process}/openapi.json")


def test_no_input_makes_the_gateway_fail(api_schema: schemathesis.BaseSchema) -> None:
    headers = {"Authorization": f"Bearer {mint_token(DEV_SECRET, 'fuzz-user')}"}
    tested = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/events"):
            continue  # an open stream: covered by the SSE tests

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def call(case: Any) -> None:
            response = case.call(headers=headers, timeout=10)
            case.validate_response(response, checks=[not_a_server_error])

        call()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /v1/projects/{project_id}/builds" in tested
    assert len(tested) >= 10
