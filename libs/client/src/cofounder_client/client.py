"""The clients: :class:`CofounderClient` (a founder's routes, with their token) and
:class:`AdminClient` (the admin routes, with the admin token). Synchronous, over httpx; a
build's live events through httpx-sse. Every method returns typed values (``models.py``) and
raises :class:`ApiError` (the gateway's problem, its fields as attributes) or
:class:`NetworkError` (no answer)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from cofounder_client.errors import ApiError, NetworkError
from cofounder_client.models import (
    Build,
    BuildPage,
    BuildStatus,
    BuildUsage,
    DemoFounder,
    Event,
    TierChanged,
    TopUpAccepted,
    Usage,
)

__all__ = ["DEFAULT_GATEWAY_URL", "SSE_READ_TIMEOUT_S", "AdminClient", "CofounderClient"]

#: Where ``cofounder serve gateway`` listens by default.
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8000"

#: How long a build's event stream may stay silent before it counts as broken: four of the
#: gateway's keep-alives (one every 15 s) missed.
SSE_READ_TIMEOUT_S = 60.0


def _id(value: str) -> str:
    """An id as one path segment (whatever it holds: a slash cannot reach another route)."""
    return quote(value, safe="")


class _Client:
    """The HTTP part both clients share: one ``httpx.Client`` with the bearer token."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _network_error(self, exc: httpx.TransportError) -> NetworkError:
        return NetworkError(self.base_url, str(exc) or type(exc).__name__)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self._http.request(
                method, path, json=json, params=params, headers=headers, **extra
            )
        except httpx.TransportError as exc:
            raise self._network_error(exc) from None
        return _json(response)


def _json(response: httpx.Response) -> Any:
    """The JSON of a successful answer. An error is :class:`ApiError`, and so is an answer the
    gateway does not give (a redirect, a 204, a proxy's or a captive portal's HTML page):
    ``http_error`` with what came, not a decoding traceback."""
    if response.status_code < 300:
        try:
            return response.json()
        except ValueError:
            pass
    raise _api_error(response)


def _api_error(response: httpx.Response) -> ApiError:
    return ApiError.from_response(
        response.status_code,
        response.content,
        response.headers.get("content-type", ""),
        dict(response.headers),
    )


def _event_data(text: str) -> dict[str, Any]:
    """An event's data: its JSON object (the gateway sends nothing else), else the text as
    ``{"data": text}``."""
    try:
        found = json.loads(text)
    except ValueError:
        return {"data": text}
    return found if isinstance(found, dict) else {"data": found}


class CofounderClient(_Client):
    """A founder's client: their builds (start, read, list, cancel, live events) and their
    usage, with their token (``cofounder seed demo`` or ``cofounder token mint`` prints one).

    ::

        with CofounderClient("http://127.0.0.1:8000", token) as client:
            build = client.start_build(project_id)
            for event in client.events(build.id):
                print(event.type, event.data)
    """

    def __init__(
        self,
        base_url: str = DEFAULT_GATEWAY_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout=timeout, transport=transport)

    def start_build(
        self, project_id: str, *, goal: str | None = None, idempotency_key: str | None = None
    ) -> Build:
        """Queue a build of the project (``start_build``). The same ``idempotency_key`` again
        returns the build it created instead of another one."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body = {"goal": goal} if goal is not None else {}
        found = self._request(
            "POST", f"/v1/projects/{_id(project_id)}/builds", json=body, headers=headers
        )
        return Build.from_json(found)

    def get_build(self, build_id: str) -> Build:
        """One of your builds (``get_build``)."""
        return Build.from_json(self._request("GET", f"/v1/builds/{_id(build_id)}"))

    def get_build_log(self, build_id: str) -> bytes:
        """A finished build's log archive (``get_build_log``): gzip JSON Lines, one feed entry
        a line (``id``, ``type``, ``event_id``, ``data``, ``source``). 404 (type
        ``log_not_archived``) until the build has ended and its log is archived."""
        try:
            response = self._http.request("GET", f"/v1/builds/{_id(build_id)}/log")
        except httpx.TransportError as exc:
            raise self._network_error(exc) from None
        if response.status_code >= 400:
            raise _api_error(response)
        return response.content

    def list_builds(
        self, *, status: BuildStatus | None = None, limit: int = 20, cursor: str | None = None
    ) -> BuildPage:
        """One page of your builds, newest first (``list_builds``); pass the page's
        ``next_cursor`` as ``cursor`` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        return BuildPage.from_json(self._request("GET", "/v1/builds", params=params))

    def iter_builds(self, *, status: BuildStatus | None = None) -> Iterator[Build]:
        """Every one of your builds, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.list_builds(status=status, limit=100, cursor=cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel_build(self, build_id: str) -> Build:
        """Cancel a build (``cancel_build``): the agent stops before its next step. 409
        ``build_finished`` once it has ended."""
        return Build.from_json(self._request("POST", f"/v1/builds/{_id(build_id)}/cancel"))

    def events(
        self,
        build_id: str,
        *,
        last_event_id: str | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> Iterator[Event]:
        """The build's events as they happen (``get_build_events``, Server-Sent Events), from
        its start or after ``last_event_id``, until the build ends and the gateway closes the
        stream. A stream that breaks raises :class:`NetworkError`: open it again after the last
        event's ``id`` and nothing is missed or repeated. A ``retry:`` hint without an event
        (the gateway's event store did not answer) ends the iteration: reconnect the same way.

        The gateway sends a keep-alive every 15 s: a stream silent for :data:`SSE_READ_TIMEOUT_S`
        is a dead connection (a lost host, a partition), and breaks. ``on_open`` is called once
        the gateway has answered with an event stream, before any event: a caller that gives
        up after a quiet time can tell a quiet stream from no stream.
        """
        from httpx_sse import SSEError, connect_sse

        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        url = f"/v1/builds/{_id(build_id)}/events"
        timeout = httpx.Timeout(self._http.timeout.connect, read=SSE_READ_TIMEOUT_S)
        try:
            with connect_sse(self._http, "GET", url, headers=headers, timeout=timeout) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise _api_error(source.response)
                content_type = source.response.headers.get("content-type", "")
                if on_open is not None and content_type.startswith("text/event-stream"):
                    on_open()  # (a proxy's page in a 200 is no stream: SSEError below)
                try:
                    for sse in source.iter_sse():
                        if not sse.data:
                            continue  # no event (a retry: hint alone), as EventSource does
                        yield Event(id=sse.id, type=sse.event, data=_event_data(sse.data))
                except SSEError as exc:  # not an event stream: a proxy's answer, say
                    raise NetworkError(self.base_url, str(exc)) from None
        except httpx.TransportError as exc:
            raise self._network_error(exc) from None

    def usage(self, *, days: int = 7) -> Usage:
        """Your spend per day (the last ``days``, today included) and today's budget."""
        return Usage.from_json(self._request("GET", "/v1/usage", params={"days": days}))

    def build_usage(self, build_id: str) -> BuildUsage:
        """What one of your builds spent, in all and by model."""
        return BuildUsage.from_json(self._request("GET", f"/v1/builds/{_id(build_id)}/usage"))


class AdminClient(_Client):
    """The admin API, with the admin token (``ADMIN_TOKEN``): seeding, any user's usage,
    top-ups and plan changes."""

    def __init__(
        self,
        base_url: str = DEFAULT_GATEWAY_URL,
        admin_token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, admin_token, timeout=timeout, transport=transport)

    def seed_demo(self) -> DemoFounder:
        """A demo founder with a project, an idea brief and an interview, and their token."""
        return DemoFounder.from_json(self._request("POST", "/v1/admin/demo"))

    def create_user(
        self, email: str, *, tier: str = "bootstrapper", suspension_reason: str | None = None
    ) -> str:
        """A new user's id (409 ``email_taken``, 422 ``unknown_tier``)."""
        body: dict[str, Any] = {"email": email, "tier": tier}
        if suspension_reason is not None:
            body["suspension_reason"] = suspension_reason
        return str(self._request("POST", "/v1/admin/users", json=body)["id"])

    def create_project(self, owner_id: str, name: str) -> str:
        """A new project's id (404 ``user_not_found``)."""
        body = {"owner_id": owner_id, "name": name}
        return str(self._request("POST", "/v1/admin/projects", json=body)["id"])

    def put_idea_brief(self, project_id: str, content: dict[str, Any]) -> str:
        """Set the project's idea brief; the artifact's id."""
        path = f"/v1/admin/projects/{_id(project_id)}/idea-brief"
        return str(self._request("PUT", path, json={"content": content})["id"])

    def create_interview(
        self,
        project_id: str,
        questions: list[dict[str, str]],
        answers: dict[str, str] | None = None,
    ) -> str:
        """Add an understanding session (``questions``: ``{"id", "text"}`` each; ``answers``
        by question id); its id."""
        path = f"/v1/admin/projects/{_id(project_id)}/understanding-sessions"
        body = {"questions": questions, "answers": answers or {}}
        return str(self._request("POST", path, json=body)["id"])

    def user_usage(self, user_id: str, *, days: int = 7) -> Usage:
        """A user's spend per day and today's budget."""
        path = f"/v1/admin/users/{_id(user_id)}/usage"
        return Usage.from_json(self._request("GET", path, params={"days": days}))

    def user_build_usage(self, user_id: str, build_id: str) -> BuildUsage:
        """What a user's build spent, by model."""
        path = f"/v1/admin/users/{_id(user_id)}/builds/{_id(build_id)}/usage"
        return BuildUsage.from_json(self._request("GET", path))

    def top_up(self, user_id: str, amount_micros: int, *, note: str = "") -> TopUpAccepted:
        """Grant extra budget, usable at once; the user's sleeping builds wake."""
        path = f"/v1/admin/users/{_id(user_id)}/top-ups"
        body = {"amount_micros": amount_micros, "note": note}
        return TopUpAccepted.from_json(self._request("POST", path, json=body))

    def set_tier(self, user_id: str, tier: str) -> TierChanged:
        """Move a user to another plan (422 ``unknown_tier``)."""
        path = f"/v1/admin/users/{_id(user_id)}/tier"
        return TierChanged.from_json(self._request("PUT", path, json={"tier": tier}))
