"""The FastAPI application: versioned routes under ``/v1``, problem+json errors, metrics."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

import asyncpg
import structlog
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts import BuildStatus
from cofounder_gateway import builds
from cofounder_gateway.admin import admin_router
from cofounder_gateway.auth import User
from cofounder_gateway.docs import docs_router
from cofounder_gateway.feed import SSE_BLOCK_MS, Feed, TooManyStreams, ends_build, id_order
from cofounder_gateway.inputs import (
    BuildId,
    IdempotencyKey,
    LastEventId,
    PageCursor,
    ProjectId,
    is_stream_id,
)
from cofounder_gateway.limits import BodyLimit
from cofounder_gateway.outbox import Relay
from cofounder_gateway.problems import ApiError, CatchCrashes, install, problem_responses
from cofounder_gateway.schemas import BuildList, BuildOut, StartBuild, build_json, build_out
from cofounder_gateway.settings import GatewaySettings
from cofounder_gateway.usage import usage_routers

__all__ = ["Gateway", "create_app"]

_log = structlog.get_logger("cofounder.gateway")

SSE_REWOUND = Counter(
    "cofounder_gateway_sse_rewound_total",
    "Event streams served from the feed's start although the client sent a Last-Event-ID: the "
    "feed ends before that id, or is gone, so Redis lost it and it was rebuilt (or is being).",
)

#: The SSE id of a finished build's summary (see ``build_events``): below every entry id, so a
#: client resuming after it gets whatever a feed made later holds.
_SUMMARY_ID = b"0-1"
#: What a stream says when Redis fails under it: reconnect (with ``Last-Event-ID``) soon.
_RETRY = b"retry: 2000\n: the event store did not answer; reconnect\n\n"


@dataclass(frozen=True, slots=True)
class Gateway:
    """Everything the routes use, built once by the composition root."""

    settings: GatewaySettings
    engine: AsyncEngine
    redis: Redis
    feed: Feed
    relay: Relay
    #: The driver pool of the build-creating write (see ``builds_pg.py``).
    pg_pool: asyncpg.Pool


def create_app(gw: Gateway) -> FastAPI:
    """The application for ``gw`` (no I/O here: connections are the caller's)."""
    app = FastAPI(
        # Metrics are Prometheus (/metrics); FastAPI's OpenTelemetry hooks would cost a provider
        # lookup per request for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Cofounder build pipeline",
        version="1.0.0",
        description="Start builds, follow them live, cancel them.",
        # The documentation pages load their scripts from this server, not a CDN (docs.py).
        docs_url=None,
        redoc_url=None,
    )
    install(app)
    app.include_router(docs_router(app))
    v1 = APIRouter(prefix="/v1")

    app.state.gw = gw

    @v1.post(
        "/projects/{project_id}/builds",
        status_code=202,
        response_model=BuildOut,
        responses=problem_responses(
            400,
            401,
            404,
            409,
            413,
            422,
            429,
            503,
            s404="No such project of yours (type: project_not_found)",
            s409="The Idempotency-Key was used for another request (type: idempotency_key_reused)",
            s429="Too many active builds for the plan (type: too_many_active_builds)",
            s503="Autonomous builds are switched off (type: autonomous_agent_off)",
        ),
    )
    async def start_build(
        project_id: ProjectId,
        body: StartBuild,
        user: User,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        """Queue a build of the project; 202 with its id and links."""
        if not gw.settings.autonomous_agent:
            raise ApiError(
                503, "autonomous_agent_off", "autonomous builds are switched off on this deployment"
            )
        build, created = await builds.create_build(
            gw.engine,
            user_id=user,
            project_id=project_id,
            goal=body.goal,
            idempotency_key=idempotency_key,
            limits=gw.settings.tier_max_concurrent_builds,
            pg_pool=gw.pg_pool,
        )
        if created:
            gw.relay.poke()
        # The BuildOut body, serialised directly (response_model above documents it).
        return Response(
            build_json(build),
            status_code=202,
            media_type="application/json",
            headers={"Location": f"/v1/builds/{build.id}"},
        )

    @v1.get(
        "/builds/{build_id}", response_model=BuildOut, responses=problem_responses(401, 404, 422)
    )
    async def get_build(build_id: BuildId, user: User) -> BuildOut:
        """One of your builds."""
        return build_out(await builds.get_build(gw.engine, user_id=user, build_id=build_id))

    @v1.get(
        "/builds",
        response_model=BuildList,
        responses=problem_responses(
            400, 401, 422, s400="Not a cursor this API returned (type: invalid_cursor)"
        ),
    )
    async def list_builds(
        user: User,
        status: BuildStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: PageCursor = None,
    ) -> BuildList:
        """Your builds, newest first."""
        items, next_cursor = await builds.list_builds(
            gw.engine, user_id=user, status=status, limit=limit, cursor=cursor
        )
        return BuildList(items=[build_out(b) for b in items], next_cursor=next_cursor)

    @v1.post(
        "/builds/{build_id}/cancel",
        status_code=202,
        response_model=BuildOut,
        responses=problem_responses(
            401, 404, 409, 422, s409="The build has ended (type: build_finished)"
        ),
    )
    async def cancel_build(build_id: BuildId, user: User) -> BuildOut:
        """Cancel a build; the agent stops between iterations."""
        build = await builds.cancel_build(gw.engine, user_id=user, build_id=build_id)
        gw.relay.poke()
        return build_out(build)

    @v1.get(
        "/builds/{build_id}/events",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}},
            **problem_responses(
                400,
                401,
                404,
                422,
                429,
                s400="Last-Event-ID is not an event id (type: invalid_last_event_id)",
                s429="Too many open streams (type: too_many_streams)",
            ),
        },
    )
    async def build_events(
        build_id: BuildId,
        user: User,
        request: Request,
        last_event_id: LastEventId = None,
    ) -> StreamingResponse:
        """The build's events as Server-Sent Events; resumes after ``Last-Event-ID``; ends
        with the build.

        After Redis lost the build's feed (PostgreSQL keeps the build): when the feed ends
        before ``Last-Event-ID``, or is gone, while the build runs, the stream starts from the
        feed's first entry (the feed was rebuilt: each of its entries is new to the client). A
        finished build whose feed is gone (expired or lost) sends one event, ``build.summary``
        with id ``0-1``: its data is the build as ``GET /v1/builds/{id}`` returns it; the stream
        then ends."""
        after = last_event_id or "0"
        # Checked before the stream starts: an id Redis refuses would cut it after a 200.
        if after != "0" and not is_stream_id(after):
            raise ApiError(
                400,
                "invalid_last_event_id",
                "Last-Event-ID is not an event id: send the id: of an event this stream sent",
            )
        build = await builds.get_build(gw.engine, user_id=user, build_id=build_id)
        summary = build_json(build) if BuildStatus(build.status).ended else None
        return _event_stream(gw.feed, user, build_id, after, request, summary)

    @v1.get("/healthz")
    async def health() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @v1.get(
        "/readyz", responses=problem_responses(503, s503="A dependency is unreachable (not_ready)")
    )
    async def ready() -> dict[str, str]:
        """Redis and the database answer."""
        try:
            async with asyncio.timeout(2):
                await gw.redis.ping()
                async with gw.engine.connect() as conn:
                    await conn.execute(text("select 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            raise ApiError(
                503, "not_ready", f"a dependency is unreachable: {type(exc).__name__}"
            ) from None
        return {"status": "ready"}

    v1.include_router(admin_router(gw.engine, gw.settings))
    users_usage, admin_usage = usage_routers(gw.engine, gw.redis, gw.settings, gw.relay.poke)
    v1.include_router(users_usage)
    v1.include_router(admin_usage)
    app.include_router(v1)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=gw.settings.max_body_bytes)
    app.add_middleware(CatchCrashes)  # outermost of ours: catches what BodyLimit raises too
    return app


def _event_stream(
    feed: Feed, user: str, build_id: str, after: str, request: Request, summary: bytes | None
) -> StreamingResponse:
    """The SSE response, holding one of the founder's stream slots while it lasts.
    ``summary``: a finished build's JSON view, None while the build runs."""
    try:
        release = feed.claim_stream(user)
    except TooManyStreams as exc:
        raise ApiError(429, "too_many_streams", str(exc), headers={"Retry-After": "5"}) from None
    body = _sse(feed, build_id, after, request, summary, release)
    weakref.finalize(body, release)  # a stream whose body never started gives its room back
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _start(feed: Feed, build_id: str, after: str, finished: bool) -> str | None:
    """The id to read after: ``after``, or ``0`` when the feed was rebuilt since the client saw
    ``after``; None when the build is finished and its feed gone (nothing to read).

    Costs one round trip when the client resumes or the build is finished, none otherwise. A
    feed whose last id is before ``after`` cannot be the one the client read (ids only grow):
    Redis lost it (or failed over to a replica that missed its end) and it was made again. A
    missing feed of a running build will be made again by its next entry, whose id may well be
    before ``after`` too (another server's clock): from ``0`` it is sent whatever its id."""
    if after == "0" and not finished:
        return after
    last = await feed.last_id(build_id)
    if last is None and finished:
        return None
    if after != "0" and (last is None or id_order(last) < id_order(after)):
        _log.info("sse_feed_rebuilt", build_id=build_id, client_last_id=after, feed_last_id=last)
        SSE_REWOUND.inc()
        return "0"
    return after


async def _sse(
    feed: Feed,
    build_id: str,
    after: str,
    request: Request,
    summary: bytes | None,
    release: Callable[[], None],
) -> AsyncIterator[bytes]:
    """Feed entries as SSE; a comment every 15 s keeps proxies from closing the stream.

    When Redis fails under a read, the stream ends with a ``retry:`` hint instead of a
    traceback: the client reconnects with ``Last-Event-ID`` and misses nothing. Where the
    stream starts after a loss of the feed: :func:`_start`."""
    finished = summary is not None
    try:
        try:
            start = await _start(feed, build_id, after, finished)
        except RedisError as exc:
            _log.warning("sse_read_failed", build_id=build_id, error=type(exc).__name__)
            yield _RETRY
            return
        if start is None:  # a finished build whose feed is gone: its row sums it up
            if summary is not None:
                yield b"id: %s\nevent: build.summary\ndata: %s\n\n" % (_SUMMARY_ID, summary)
            return
        after = start
        while True:
            got = False
            block = None if finished else SSE_BLOCK_MS
            try:
                async for entry_id, fields in feed.read(build_id, after=after, block_ms=block):
                    got = True
                    after = entry_id
                    data = fields.get(b"data", b"{}").decode()
                    kind = fields.get(b"type", b"message").decode()
                    yield f"id: {entry_id}\nevent: {kind}\ndata: {data}\n\n".encode()
                    if ends_build(fields):
                        return
            except RedisError as exc:
                _log.warning("sse_read_failed", build_id=build_id, error=type(exc).__name__)
                yield _RETRY
                return
            if not got:
                if finished or await request.is_disconnected():
                    return
                yield b": keep-alive\n\n"
    finally:
        release()
