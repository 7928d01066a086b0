"""The access log and the RED metrics (``access.py``): one line per request with the route's
template, the status, the latency and the user, never a token; counts by route template, a
latency histogram, the open event streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.staticfiles import StaticFiles
from structlog.testing import capture_logs

from cofounder_gateway.access import (
    HTTP_METRICS,
    AccessLog,
    HttpMetrics,
    redact_query,
    remember_user,
)
from cofounder_gateway.problems import CatchCrashes

USER = "6f1c1b9e-5d2a-4c41-9a57-2f0d3c7e8b10"


async def _user(request: Request) -> str:
    return remember_user(request, USER)


def _app(metrics: HttpMetrics, log: Any, *, crash_guard: bool = True) -> FastAPI:
    """Routes as the gateway has them: on a router included under ``/v1``, one straight on the
    app, static files mounted."""
    app = FastAPI()
    opened = asyncio.Event()
    release = asyncio.Event()
    app.state.opened, app.state.release = opened, release
    v1 = APIRouter()

    @v1.get("/builds/{build_id}")
    async def get_build(build_id: str, user: Annotated[str, Depends(_user)]) -> dict[str, str]:
        return {"id": build_id, "user": user}

    @v1.get("/public")
    async def public() -> dict[str, str]:
        return {}

    @v1.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @v1.get("/builds/{build_id}/events")
    async def events(build_id: str, user: Annotated[str, Depends(_user)]) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b": hello\n\n"
            opened.set()
            await release.wait()
            yield b"data: end\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    @app.get("/metrics")
    async def scrape() -> dict[str, str]:
        return {}

    app.include_router(v1, prefix="/v1")
    app.mount("/assets", StaticFiles(directory=Path(__file__).parent), name="assets")
    if crash_guard:
        app.add_middleware(CatchCrashes)
    app.add_middleware(AccessLog, metrics=metrics, log=log)
    return app


def _families(metrics: HttpMetrics) -> dict[str, Any]:
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(
    metrics: HttpMetrics, family_name: str, name: str
) -> dict[tuple[tuple[str, str], ...], float]:
    family = _families(metrics)[family_name]
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


async def test_one_line_per_request_with_the_route_template_status_user_and_no_token() -> None:
    metrics = HttpMetrics()
    with capture_logs() as lines:
        app = _app(metrics, structlog.get_logger("test"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            secret = "eyJhbGciOiJIUzI1NiJ9.secret-part.sig"
            ok = await client.get(
                "/v1/builds/b-1",
                params={"token": secret, "view": "full", "Access_Token": secret},
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert ok.status_code == 200
            assert (await client.get("/v1/nowhere/b-1")).status_code == 404
            assert (await client.get("/v1/boom")).status_code == 500
            assert (await client.post("/v1/public")).status_code == 405
            assert (await client.get("/metrics")).status_code == 200
            assert (await client.get("/assets/conftest.py")).status_code == 200
    requests = [line for line in lines if line["event"] == "request"]
    assert len(requests) == 6, lines
    first, unmatched, crashed, not_allowed, scrape, asset = requests
    assert first["method"] == "GET"
    assert first["route"] == "/v1/builds/{build_id}"
    assert first["path"] == "/v1/builds/b-1"
    assert first["status"] == 200
    assert first["user_id"] == USER
    assert first["query"] == "token=[redacted]&view=full&Access_Token=[redacted]"
    assert isinstance(first["duration_ms"], float)
    assert first["duration_ms"] >= 0
    assert secret not in repr(lines)
    assert "authorization" not in repr(lines).lower()
    assert (unmatched["route"], unmatched["status"], unmatched["user_id"]) == (None, 404, None)
    assert "query" not in unmatched
    assert (crashed["route"], crashed["status"]) == ("/v1/boom", 500)
    assert (not_allowed["route"], not_allowed["status"]) == ("/v1/public", 405)
    assert (scrape["route"], asset["route"]) == ("/metrics", "/assets/{path}")

    counts = _samples(metrics, "cofounder_gateway_requests", "cofounder_gateway_requests_total")
    assert counts == {
        (("method", "GET"), ("route", "/v1/builds/{build_id}"), ("status", "200")): 1.0,
        (("method", "GET"), ("route", "unmatched"), ("status", "404")): 1.0,
        (("method", "GET"), ("route", "/v1/boom"), ("status", "500")): 1.0,
        (("method", "POST"), ("route", "/v1/public"), ("status", "405")): 1.0,
        (("method", "GET"), ("route", "/metrics"), ("status", "200")): 1.0,
        (("method", "GET"), ("route", "/assets/{path}"), ("status", "200")): 1.0,
    }
    histogram = _samples(
        metrics, "cofounder_gateway_request_seconds", "cofounder_gateway_request_seconds_count"
    )
    assert histogram[(("method", "GET"), ("route", "/v1/builds/{build_id}"))] == 1.0
    infinite = {
        s.labels["route"]: s.value
        for s in _families(metrics)["cofounder_gateway_request_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"
    }
    assert infinite["/v1/boom"] == 1.0


async def test_an_exception_no_handler_took_is_logged_as_a_500_and_raised_on() -> None:
    metrics = HttpMetrics()
    with capture_logs() as lines:
        app = _app(metrics, structlog.get_logger("test"), crash_guard=False)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v1/boom")).status_code == 500
    (line,) = [line for line in lines if line["event"] == "request"]
    assert (line["route"], line["status"]) == ("/v1/boom", 500)


async def test_event_streams_are_counted_open_while_they_last() -> None:
    metrics = HttpMetrics()
    with capture_logs() as lines:
        app = _app(metrics, structlog.get_logger("test"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def follow() -> list[str]:
                async with client.stream("GET", "/v1/builds/b-2/events") as stream:
                    return [line async for line in stream.aiter_lines() if line]

            reading = asyncio.create_task(follow())
            await asyncio.wait_for(app.state.opened.wait(), 10)
            assert metrics.open_streams == 1
            gauge = _families(metrics)["cofounder_gateway_sse_streams_open"]
            assert [s.value for s in gauge.samples] == [1.0]
            assert not [line for line in lines if line["event"] == "request"]  # still open
            app.state.release.set()
            assert await asyncio.wait_for(reading, 10) == [": hello", "data: end"]
    assert metrics.open_streams == 0
    (line,) = [line for line in lines if line["event"] == "request"]
    assert (line["route"], line["status"], line["user_id"]) == (
        "/v1/builds/{build_id}/events",
        200,
        USER,
    )


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        ("token=abc", "token=[redacted]"),
        ("a=1&b=2", "a=1&b=2"),
        ("stream_token=x&api_key=y&password=z&after=5", "stream_token=[redacted]&api_key="
         "[redacted]&password=[redacted]&after=5"),
        ("%74oken=abc", "%74oken=[redacted]"),  # percent-encoded names too
        ("token", "token"),  # no value to hide
        ("last_event_id=1-0&x=", "last_event_id=1-0&x="),
    ],
)  # fmt: skip
def test_credential_like_query_values_are_redacted(query: str, logged: str) -> None:
    assert redact_query(query) == logged


def test_the_process_collector_is_registered_and_exports_every_family() -> None:
    from prometheus_client import REGISTRY

    text = generate_latest(REGISTRY).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "cofounder_gateway_requests",
        "cofounder_gateway_request_seconds",
        "cofounder_gateway_sse_streams_open",
    } <= names
    assert isinstance(HTTP_METRICS, HttpMetrics)
