"""A build's events as Server-Sent Events, read from its feed (``feed.py``), or from its log
archive once the feed is gone (``archive.py``); and the archive's download."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import Counter
from redis.exceptions import RedisError

from cofounder_contracts import BuildStatus
from cofounder_gateway import builds
from cofounder_gateway.access import remember_user
from cofounder_gateway.archive import Archives, StoreError
from cofounder_gateway.auth import user_from_header, user_from_stream_token
from cofounder_gateway.deps import (
    CurrentUser,
    EngineDep,
    FeedDep,
    GatewayDep,
    SettingsDep,
    bearer_header,
    stream_token,
)
from cofounder_gateway.feed import SSE_BLOCK_MS, Feed, TooManyStreams, ends_build, id_order
from cofounder_gateway.inputs import BuildId, LastEventId, is_stream_id
from cofounder_gateway.problems import NO_BUILD, NOT_THIS_BUILD, ApiError, problem_responses
from cofounder_gateway.schemas import build_json

__all__ = ["SSE_REWOUND", "router"]

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

router = APIRouter(tags=["builds"])

#: The OpenAPI example of a stream: each event's data is the event as the catalog
#: (docs/events/) describes it, envelope included.
_EXAMPLE_STREAM = (
    "id: 1772442904112-0\nevent: build.status_changed\n"
    'data: {"type":"build.status_changed","build_id":"0195a0e2-7c1d-7d4e-9a2b-3c4d5e6f7a8b",'
    '"project_id":"0195a0e1-1b2c-7d3e-8f4a-5b6c7d8e9f0a",'
    '"user_id":"0195a0e0-4d5e-7f6a-8b7c-9d0e1f2a3b4c","producer":"context-assembler",'
    '"event_id":"0195a0e2-8a1b-7c2d-9e3f-4a5b6c7d8e9f","schema_version":1,'
    '"occurred_at":"2026-03-02T09:15:04.112000Z",'
    '"causation_id":"0195a0e2-7c1d-7069-8b4a-09d3e2f50a51","trace":null,'
    '"status":"assembling","reason":null}\n\n'
    ": keep-alive\n\n"
)

#: ``?after=``: where a new EventSource resumes (it cannot set the header itself).
AfterQuery = Annotated[
    str | None,
    Query(
        alias="after",
        max_length=41,
        description="Resume after this event id, for clients that cannot send the "
        "Last-Event-ID header; the header wins when both are sent.",
    ),
]


async def events_reader(
    build_id: BuildId,
    settings: SettingsDep,
    request: Request,
    # Security schemes (founderToken or streamToken), so the OpenAPI document says so.
    authorization: Annotated[str | None, Depends(bearer_header)],
    token: Annotated[str | None, Depends(stream_token)],
) -> str:
    """The user reading a build's events: the bearer token's (``Authorization``) or, without
    one, the stream token's (``?token=``, for this build only). 401/403 otherwise."""
    secret = settings.jwt_secret.get_secret_value()
    if authorization is None and token is not None:
        user = user_from_stream_token(token, secret, build_id=build_id)
    else:
        user = user_from_header(authorization, secret)
    return remember_user(request, user)  # the access-log line's user_id (access.py)


@router.get(
    "/builds/{build_id}/events",
    name="get_build_events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The build's events, one Server-Sent Event each (id, event, data: "
            "the event's JSON), until the build ends",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": _EXAMPLE_STREAM,
                }
            },
        },
        **problem_responses(
            400,
            401,
            403,
            404,
            422,
            429,
            s400="Last-Event-ID is not an event id (type: invalid_last_event_id)",
            s404=NO_BUILD,
            s403=NOT_THIS_BUILD,
            s429="Too many open streams (type: too_many_streams)",
        ),
    },
)
async def build_events(
    build_id: BuildId,
    user: Annotated[str, Depends(events_reader)],
    request: Request,
    engine: EngineDep,
    feed: FeedDep,
    gateway: GatewayDep,
    last_event_id: LastEventId = None,
    after_query: AfterQuery = None,
) -> StreamingResponse:
    """The build's events as Server-Sent Events; resumes after ``Last-Event-ID``; ends
    with the build.

    After Redis lost the build's feed (PostgreSQL keeps the build): when the feed ends
    before ``Last-Event-ID``, or is gone, while the build runs, the stream starts from the
    feed's first entry (the feed was rebuilt: each of its entries is new to the client). A
    finished build whose feed is gone (expired or lost) is served from its log archive, with
    the feed's ids, resuming after ``Last-Event-ID`` alike; a finished build with no archive
    (archiving off, or not written yet) sends one event, ``build.summary`` with id ``0-1``: its
    data is the build as ``GET /v1/builds/{id}`` returns it; the stream then ends.

    Browsers: ``?token=`` (a stream token) in place of the Authorization header, and
    ``?after=`` (the last event id) in place of the header on a new connection."""
    after = last_event_id or after_query or "0"
    # Checked before the stream starts: an id Redis refuses would cut it after a 200.
    if after != "0" and not is_stream_id(after):
        raise ApiError(
            400,
            "invalid_last_event_id",
            "Last-Event-ID is not an event id: send the id: of an event this stream sent",
        )
    build = await builds.get_build(engine, user_id=user, build_id=build_id)
    ended = BuildStatus(build.status).ended
    summary = build_json(build) if ended else None
    archived = _Archived(gateway.archives, build.tier) if ended else None
    return _event_stream(feed, user, build_id, after, request, summary, archived)


class _Archived:
    """Where a finished build's archive is read from, when its feed is gone."""

    def __init__(self, archives: Archives | None, tier: str) -> None:
        self.archives = archives
        self.tier = tier

    async def entries(self, build_id: str) -> list[tuple[str, dict[bytes, bytes]]] | None:
        """The archive's entries as feed entries (id, fields); None when there is none."""
        if self.archives is None:
            return None
        try:
            found = await self.archives.entries(tier=self.tier, build_id=build_id)
        except (StoreError, OSError, ValueError) as exc:
            _log.warning("log_archive_unreadable", build_id=build_id, error=str(exc)[:500])
            return None
        if found is None:
            return None
        return [
            (
                e.id,
                {
                    b"type": e.type.encode(),
                    b"event_id": e.event_id.encode(),
                    b"data": bytes(e.data),
                },
            )
            for e in found
        ]


def _event_stream(
    feed: Feed,
    user: str,
    build_id: str,
    after: str,
    request: Request,
    summary: bytes | None,
    archived: _Archived | None = None,
) -> StreamingResponse:
    """The SSE response, holding one of the founder's stream slots while it lasts.
    ``summary``: a finished build's JSON view, None while the build runs; ``archived``: where
    its archive is read from when its feed is gone."""
    try:
        release = feed.claim_stream(user)
    except TooManyStreams as exc:
        raise ApiError(429, "too_many_streams", str(exc), headers={"Retry-After": "5"}) from None
    body = _sse(feed, build_id, after, request, summary, release, archived)
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
    archived: _Archived | None = None,
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
        if start is None:  # a finished build whose feed is gone: its archive, or its row
            entries = None if archived is None else await archived.entries(build_id)
            if entries is not None:
                for chunk in _replay(entries, after):
                    yield chunk
                return
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
                    yield _sse_event(entry_id, fields)
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


def _sse_event(entry_id: str, fields: dict[bytes, bytes]) -> bytes:
    data = fields.get(b"data", b"{}").decode()
    kind = fields.get(b"type", b"message").decode()
    return f"id: {entry_id}\nevent: {kind}\ndata: {data}\n\n".encode()


def _replay(entries: list[tuple[str, dict[bytes, bytes]]], after: str) -> list[bytes]:
    """An archive's entries after ``after`` as the feed's read sends them: the same ids, the
    same bytes, ending at the build's end."""
    out = []
    for entry_id, fields in entries:
        if after != "0" and id_order(entry_id) <= id_order(after):
            continue
        out.append(_sse_event(entry_id, fields))
        if ends_build(fields):
            break
    return out


@router.get(
    "/builds/{build_id}/log",
    name="get_build_log",
    response_class=Response,
    responses={
        200: {
            "description": "The finished build's log archive: every event of its feed, in "
            "order, one JSON object a line (id, type, event_id, data, source), gzip-compressed",
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(
            401,
            404,
            422,
            503,
            s404="No such build of yours (type: build_not_found), or its log is not archived "
            "(type: log_not_archived): a build's log is archived when it ends",
            s503="The archive store did not answer (type: log_archive_unavailable)",
        ),
    },
)
async def get_build_log(
    build_id: BuildId, user: CurrentUser, engine: EngineDep, gateway: GatewayDep
) -> Response:
    """The build's log archive (gzip JSON Lines), written once when the build ended."""
    build = await builds.get_build(engine, user_id=user, build_id=build_id)
    data = None
    if gateway.archives is not None and BuildStatus(build.status).ended:
        try:
            data = await gateway.archives.read(tier=build.tier, build_id=build_id)
        except (StoreError, OSError) as exc:
            _log.warning("log_archive_unreadable", build_id=build_id, error=str(exc)[:500])
            raise ApiError(
                503, "log_archive_unavailable", "the log archive could not be read; retry soon"
            ) from None
    if data is None:
        raise ApiError(
            404,
            "log_not_archived",
            f"build {build_id} has no log archive (yet): a build's log is archived when it ends",
        )
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{build_id}.jsonl.gz"'},
    )
