"""Property-based run over the OpenAPI document against the gateway as a real process.

Inputs are generated from the document, valid and invalid, with NUL characters allowed and also
put into one string of otherwise valid cases. The founder's routes are called with a real
founder's token (a user with a project and a build, seeded through the admin API) and, in part of
the cases, that founder's real ids in the path, so inputs reach real rows; the admin's routes with
the admin token. Whatever the input: no 5xx, and no response the document does not describe (its
status code, its content type, its headers, its body's schema).

Then schemathesis's own command line (``st run``: its examples, coverage, fuzzing and stateful
phases) against the same process, once with the founder's token on the founder's routes and
once with the admin token on the admin routes, with the same checks: zero failures.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

#: The development admin token (the process runs with ENVIRONMENT=development).
ADMIN = {"Authorization": "Bearer dev-admin-token"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 30


@dataclass(frozen=True)
class Founder:
    """A seeded founder: ids of real rows, and a token."""

    ids: dict[str, str]
    headers: dict[str, str]


@pytest.fixture(scope="module")
def founder(gateway_process: str) -> Founder:
    with httpx.Client(base_url=gateway_process, timeout=10) as http:
        demo = http.post("/v1/admin/demo", headers=ADMIN)
        assert demo.status_code == 201, demo.text
        seeded = demo.json()
        headers = {"Authorization": f"Bearer {seeded['token']}"}
        build = http.post(f"/v1/projects/{seeded['project_id']}/builds", json={}, headers=headers)
        assert build.status_code == 202, build.text
    ids = {
        "user_id": seeded["user_id"],
        "project_id": seeded["project_id"],
        "build_id": build.json()["id"],
    }
    return Founder(ids=ids, headers=headers)


@pytest.fixture(scope="module")
def api_schema(gateway_process: str) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{gateway_process}/openapi.json")
    schema.config.generation.update(allow_x00=True, codec="utf-8")
    return schema


def _with_nul(case: schemathesis.Case[Any], choice: int) -> schemathesis.Case[Any]:
    """``case`` with a NUL in one of its strings (path, query or body, at any depth): the
    document's valid inputs never hold one, and generation rarely picks the one character that
    breaks its pattern."""
    slots: list[tuple[Any, Any]] = []
    pending: list[Any] = [case.path_parameters or {}, case.query or {}, case.body]
    while pending:
        container = pending.pop()
        if isinstance(container, dict):
            items: Any = container.items()
        elif isinstance(container, list):
            items = enumerate(container)
        else:
            continue
        for key, value in items:
            if isinstance(value, str):
                slots.append((container, key))
            elif isinstance(value, dict | list):
                pending.append(value)
    if slots:
        container, key = slots[choice % len(slots)]
        container[key] = container[key][:1] + "\x00" + container[key][1:]
    return case


def _fuzz(strategy: st.SearchStrategy[Any], headers: dict[str, str]) -> None:
    """Call the gateway with ``EXAMPLES`` generated cases; fail on the first bad response."""

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def call(case: Any) -> None:
        response = case.call(headers=headers, timeout=10)
        case.validate_response(response, checks=CHECKS, headers=headers)

    call()


def test_no_input_makes_the_gateway_fail_or_stray_from_its_document(
    api_schema: schemathesis.BaseSchema, founder: Founder
) -> None:
    tested: list[str] = []
    failures: dict[str, BaseException] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        strategies = [
            operation.as_strategy(generation_mode=mode)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
        names = {p.name for p in operation.path_parameters}
        real = {k: v for k, v in founder.ids.items() if k in names}
        # An open stream on a real build would last until the build ends: its events route gets
        # generated ids only (404, 422, and 400 for Last-Event-ID, all before any stream).
        if real and not operation.path.endswith("/events"):
            strategies.append(operation.as_strategy(path_parameters=real))
        strategies.append(st.builds(_with_nul, strategies[-1], st.integers(min_value=0)))
        admin = operation.path.startswith("/v1/admin/")
        try:
            _fuzz(st.one_of(strategies), ADMIN if admin else founder.headers)
        # Every operation runs, then all failures are reported together (schemathesis raises a
        # FailureGroup, a BaseExceptionGroup).
        except (Exception, BaseExceptionGroup) as failure:
            failures[name] = failure
        tested.append(name)
    if failures:
        pytest.fail(
            "\n\n".join(
                f"{name}:\n{''.join(traceback.format_exception(failure)[-40:])}"
                for name, failure in failures.items()
            ),
            pytrace=False,
        )
    assert "POST /v1/projects/{project_id}/builds" in tested
    assert "GET /v1/builds/{build_id}/events" in tested
    assert "PUT /v1/admin/users/{user_id}/tier" in tested
    assert len(tested) >= 18


@pytest.mark.parametrize("who", ["founder", "admin"])
def test_schemathesis_finds_no_response_that_strays_from_the_document(
    gateway_process: str, who: str, tmp_path: Path
) -> None:
    """``st run`` with the response-conformance checks: a founder's token on every route but
    the admin's, the admin token on the admin's. The founder is a new one, without builds: the
    stateful phase follows the ids responses hold, and a running build's event stream would
    stay open until the build ends."""
    admin = who == "admin"
    if admin:
        token = ADMIN["Authorization"]
    else:
        with httpx.Client(base_url=gateway_process, timeout=10) as http:
            demo = http.post("/v1/admin/demo", headers=ADMIN)
        assert demo.status_code == 201, demo.text
        token = f"Bearer {demo.json()['token']}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{gateway_process}/openapi.json",
            "--checks",
            ",".join(check.__name__ for check in CHECKS),
            "--header",
            f"Authorization: {token}",
            "--include-path-regex",
            "^/v1/admin/" if admin else "^/v1/(?!admin/)",
            "--max-examples",
            str(EXAMPLES),
            "--request-timeout",
            "10",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # its cache and reports stay out of the checkout
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-5_000:]
    assert " passed" in done.stdout
    assert "failed" not in done.stdout.split("SUMMARY")[-1]
