"""Every line every service writes is one JSON object, as production runs them
(``LOG_JSON=true``): the whole pipeline as processes (two agent runners), a demo build followed
over SSE to its end, a few errors provoked, everything stopped gracefully; then every line of
every service's log file (stdout and stderr both: structlog's lines, uvicorn's, httpx's,
asyncio's, alembic's, the sandboxes') is parsed as JSON and has a level, a timestamp and an
event. The gateway's access log is among them: one line per request, with the route's template,
the status, the latency and the user, and never a token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cofounder_testing.pipeline import SLOTS, Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": "Bearer dev-admin-token"}


@pytest.fixture
def stack(own_database_url: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        tmp_path, database_url=own_database_url, builds=2, LOG_JSON="true", LOG_LEVEL="DEBUG"
    ) as stack:
        yield stack


def test_every_line_of_every_service_log_is_json(stack: Stack) -> None:
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
        founder = http.post("/v1/admin/demo", headers=ADMIN).json()
        token = founder["token"]
        auth = {"Authorization": f"Bearer {token}"}
        created = http.post(f"/v1/projects/{founder['project_id']}/builds", json={}, headers=auth)
        assert created.status_code == 202, created.text
        build = created.json()["id"]
        # Followed live to its end (the SSE route; the stream ends with the build).
        with http.stream("GET", f"/v1/builds/{build}/events", headers=auth, timeout=300) as events:
            assert events.status_code == 200
            for _ in events.iter_lines():
                pass

        def ended() -> bool:
            status = http.get(f"/v1/builds/{build}", headers=auth).json()["status"]
            return status in {"ready", "failed", "cancelled"}

        wait_for("the build to end", ended, stack, 180)
        # Errors: a 404, a 422, a path no route has, a 401 with the token in the query string
        # (where no route reads it), the event stream with the token in the query string.
        assert http.get(f"/v1/builds/{founder['project_id']}", headers=auth).status_code == 404
        invalid = http.post(f"/v1/projects/{founder['project_id']}/builds", json=[], headers=auth)
        assert invalid.status_code == 422, invalid.text
        assert http.get("/nowhere/at/all").status_code == 404
        unauthorized = http.get(f"/v1/builds/{build}", params={"token": token, "view": "full"})
        assert unauthorized.status_code == 401
        http.get(f"/v1/builds/{build}/events", params={"token": token})
    stack.stop()  # graceful: the shutdown's lines too

    lines: dict[str, list[dict[str, Any]]] = {}
    for slot in SLOTS:
        text = stack.log(slot)
        assert text.strip(), f"{slot} wrote nothing"
        parsed = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(f"{slot}.log line {number} is not JSON: {line!r}") from None
            assert isinstance(record, dict), (slot, number, line)
            assert {"event", "level", "timestamp"} <= set(record), (slot, number, line)
            parsed.append(record)
        lines[slot] = parsed
        assert token not in text, f"the founder's token is in {slot}.log"

    gateway = lines["gateway"]
    # Foreign loggers went through structlog too (uvicorn's start-up lines, at least).
    assert any(r.get("logger", "").startswith("uvicorn") for r in gateway), "no uvicorn line"
    access = [r for r in gateway if r["event"] == "request"]
    routes = {(r["method"], r["route"], r["status"]) for r in access}
    assert ("POST", "/v1/projects/{project_id}/builds", 202) in routes, routes
    assert ("GET", "/v1/builds/{build_id}/events", 200) in routes, routes
    assert any(r["status"] == 404 and r["route"] is None for r in access), routes
    stream = next(r for r in access if r["route"] == "/v1/builds/{build_id}/events")
    assert stream["user_id"] == founder["user_id"]
    assert all(isinstance(r["duration_ms"], float) for r in access)
    queried = [r for r in access if "query" in r]
    assert {(r["route"], r["query"]) for r in queried} == {
        ("/v1/builds/{build_id}", "token=[redacted]&view=full"),
        ("/v1/builds/{build_id}/events", "token=[redacted]"),
    }
