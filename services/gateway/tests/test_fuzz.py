"""Property-based run over the OpenAPI schema against the gateway as a real process: whatever
the input, no 5xx."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from cofounder_gateway.auth import mint_token
from cofounder_gateway.settings import DEV_SECRET

pytestmark = pytest.mark.e2e

FUZZ_REDIS_DB = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gateway_process(redis_url: str, migrated_database_url: str) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url.rsplit("/", 1)[0] + f"/{FUZZ_REDIS_DB}",
        "DATABASE_URL": migrated_database_url,
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cofounder_cli", "serve", "gateway"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/v1/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the gateway process did not start")
        time.sleep(0.1)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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
