"""The client against a stand-in transport: what it sends, how it reads answers, errors and
event streams. (Against the real gateway: ``test_against_the_gateway.py``.)"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import pytest

from cofounder_client import (
    AdminClient,
    ApiError,
    Build,
    BuildStatus,
    CofounderClient,
    CofounderError,
    Event,
    NetworkError,
)
from cofounder_client import client as client_module
from cofounder_contracts import BuildStatus as ContractStatus

BUILD = "0195a0e2-aaaa-7000-8000-0000000000f0"
PROJECT = "0195a0e2-aaaa-7000-8000-0000000000b0"
SSE = {"content-type": "text/event-stream"}


def row(status: str = "queued", **fields: Any) -> dict[str, Any]:
    base = f"/v1/builds/{BUILD}"
    return {
        "id": BUILD,
        "project_id": PROJECT,
        "status": status,
        "goal": "A todo app",
        "tier": "bootstrapper",
        "build_version": None,
        "preview_url": None,
        "error": None,
        "iterations": 2,
        "tool_calls": 5,
        "input_tokens": 1_000,
        "output_tokens": 200,
        "created_at": "2026-03-02T09:15:04.112000Z",
        "updated_at": "2026-03-02T09:16:40Z",
        "finished_at": None,
        "links": {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"},
        **fields,
    }


class Recorder:
    """A stand-in gateway: answers with ``answer(request)`` and keeps every request."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response: httpx.Response = self.answer(request)
        return response

    def client(self, token: str = "tok") -> CofounderClient:
        return CofounderClient("http://gw/", token, transport=httpx.MockTransport(self))


def test_the_build_statuses_are_the_contract_s() -> None:
    assert set(get_args(BuildStatus)) == {s.value for s in ContractStatus}


def test_start_build_sends_the_goal_the_key_and_the_token_and_reads_a_typed_build() -> None:
    gateway = Recorder(lambda _: httpx.Response(202, json=row()))
    with gateway.client() as client:
        build = client.start_build(PROJECT, goal="A todo app", idempotency_key="k-1")
    sent = gateway.requests[0]
    assert (sent.method, sent.url.path) == ("POST", f"/v1/projects/{PROJECT}/builds")
    assert sent.headers["authorization"] == "Bearer tok"
    assert sent.headers["idempotency-key"] == "k-1"
    assert json.loads(sent.content) == {"goal": "A todo app"}
    assert isinstance(build, Build)
    assert build.id == BUILD
    assert build.status == "queued"
    assert not build.ended
    assert build.created_at.year == 2026
    assert build.created_at.tzinfo is not None
    assert build.finished_at is None
    assert build.links.events == f"/v1/builds/{BUILD}/events"
    assert build.raw == row()  # the JSON as sent, for --json


def test_without_a_goal_the_body_is_empty_and_ids_stay_one_path_segment() -> None:
    gateway = Recorder(lambda _: httpx.Response(200, json=row()))
    with gateway.client() as client:
        client.start_build(PROJECT)
        client.get_build("../admin/users")
    assert json.loads(gateway.requests[0].content) == {}
    assert gateway.requests[1].url.raw_path == b"/v1/builds/..%2Fadmin%2Fusers"


def test_list_builds_passes_its_filters_and_iter_builds_follows_the_cursors() -> None:
    pages = {None: ([row()], "c-2"), "c-2": ([row("ready")], None)}

    def answer(request: httpx.Request) -> httpx.Response:
        items, cursor = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"items": items, "next_cursor": cursor})

    gateway = Recorder(answer)
    with gateway.client() as client:
        page = client.list_builds(status="queued", limit=5)
        assert page.next_cursor == "c-2"
        assert [b.status for b in page.items] == ["queued"]
        assert [b.status for b in client.iter_builds()] == ["queued", "ready"]
    assert dict(gateway.requests[0].url.params) == {"limit": "5", "status": "queued"}
    assert gateway.requests[-1].url.params["cursor"] == "c-2"


def test_a_problem_answer_is_an_api_error_with_every_field() -> None:
    problem = {
        "type": "too_many_active_builds",
        "title": "Too many requests",
        "status": 429,
        "detail": "your bootstrapper plan allows 1 active build(s) at once",
        "limit": 1,
        "active": 1,
    }
    gateway = Recorder(
        lambda _: httpx.Response(
            429,
            content=json.dumps(problem).encode(),
            headers={"content-type": "application/problem+json", "retry-after": "30"},
        )
    )
    with gateway.client() as client, pytest.raises(ApiError) as raised:
        client.start_build(PROJECT)
    error = raised.value
    assert (error.status, error.type, error.title) == (
        429,
        "too_many_active_builds",
        problem["title"],
    )
    assert error.detail == problem["detail"]
    assert error.extra == {"limit": 1, "active": 1}
    assert error.retry_after == 30.0
    assert error.problem() == problem
    assert isinstance(error, CofounderError)


def test_a_422_carries_its_refused_fields() -> None:
    errors = [{"field": "goal", "in": "body", "message": "too long", "kind": "string_too_long"}]
    body = {
        "type": "invalid_request",
        "title": "Invalid request",
        "status": 422,
        "detail": "invalid field(s): goal",
        "errors": errors,
    }
    gateway = Recorder(lambda _: httpx.Response(422, json=body))
    with gateway.client() as client, pytest.raises(ApiError) as raised:
        client.start_build(PROJECT, goal="x" * 3000)
    assert raised.value.errors == errors


def test_an_error_that_is_no_problem_object_still_is_an_api_error() -> None:
    gateway = Recorder(lambda _: httpx.Response(502, text="<html>Bad gateway</html>"))
    with gateway.client() as client, pytest.raises(ApiError) as raised:
        client.get_build(BUILD)
    assert (raised.value.status, raised.value.type) == (502, "http_error")
    assert "Bad gateway" in raised.value.detail


def test_an_answer_the_gateway_does_not_give_is_an_api_error_not_a_traceback() -> None:
    """A proxy's 503 keeps its Retry-After; a captive portal's HTML page in a 200, and a
    redirect (http to https, say), are ``http_error``s, not a JSON decoding error."""
    answers = {
        "/v1/usage": httpx.Response(503, text="busy", headers={"retry-after": "7"}),
        f"/v1/builds/{BUILD}": httpx.Response(200, text="<html>Sign in to the Wi-Fi</html>"),
        "/v1/builds": httpx.Response(308, headers={"location": "https://gw/v1/builds"}),
    }
    gateway = Recorder(lambda request: answers[request.url.path])
    with gateway.client() as client:
        with pytest.raises(ApiError) as busy:
            client.usage()
        assert (busy.value.type, busy.value.retry_after) == ("http_error", 7.0)
        with pytest.raises(ApiError) as portal:
            client.get_build(BUILD)
        assert (portal.value.status, portal.value.type) == (200, "http_error")
        assert "Sign in" in portal.value.detail
        with pytest.raises(ApiError) as moved:
            client.list_builds()
        assert (moved.value.status, moved.value.type) == (308, "http_error")
        assert moved.value.headers["location"] == "https://gw/v1/builds"


def test_a_stream_that_goes_silent_breaks_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway host lost without a reset (a partition): the stream's headers came, then
    nothing, not even the keep-alives. The read times out and the stream breaks, so a caller
    reconnects (or gives up) instead of waiting for ever."""
    monkeypatch.setattr(client_module, "SSE_READ_TIMEOUT_S", 0.5)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    held: list[socket.socket] = []

    def serve_then_go_silent() -> None:
        conn, _ = server.accept()
        held.append(conn)
        conn.recv(65_536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )

    threading.Thread(target=serve_then_go_silent, daemon=True).start()
    outcome: list[BaseException | None] = []

    def follow() -> None:
        try:
            with CofounderClient(f"http://127.0.0.1:{port}", "tok") as client:
                list(client.events(BUILD))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    reader.join(10)
    try:
        assert not reader.is_alive(), "the stream still waits on a silent connection"
        assert isinstance(outcome[0], NetworkError), outcome
    finally:
        for conn in held:
            conn.close()
        server.close()


def test_no_answer_is_a_network_error_whose_problem_has_no_status() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Recorder(refuse).client() as client, pytest.raises(NetworkError) as raised:
        client.list_builds()
    assert str(raised.value) == "cannot reach the gateway at http://gw: connection refused"
    problem = raised.value.problem()
    assert problem["type"] == "gateway_unreachable"
    assert problem["status"] is None
    assert "connection refused" in problem["detail"]


class _Chunks(httpx.SyncByteStream):
    def __init__(self, chunks: list[bytes], *, cut: bool = False) -> None:
        self.chunks = chunks
        self.cut = cut

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.cut:
            raise httpx.RemoteProtocolError("peer closed connection")


def _sse(sse_id: str, kind: str, **data: Any) -> bytes:
    return f"id: {sse_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def test_events_are_read_as_typed_events_and_resume_after_an_id() -> None:
    body = [
        _sse("1-0", "build.status_changed", status="running"),
        b": keep-alive\n\n",
        _sse("2-0", "tool.called", name="bash", input_preview="ls"),
        b"retry: 2000\n\n",  # a hint alone is no event
        _sse("3-0", "build.status_changed", status="cancelled"),
    ]
    gateway = Recorder(lambda _: httpx.Response(200, headers=SSE, stream=_Chunks(body)))
    with gateway.client() as client:
        seen = list(client.events(BUILD, last_event_id="0-5"))
    assert [(e.id, e.type) for e in seen] == [
        ("1-0", "build.status_changed"),
        ("2-0", "tool.called"),
        ("3-0", "build.status_changed"),
    ]
    assert seen[1].data == {"name": "bash", "input_preview": "ls"}
    assert [e.ends_build for e in seen] == [False, False, True]
    assert gateway.requests[0].headers["last-event-id"] == "0-5"


def test_a_refused_stream_is_an_api_error_and_a_cut_one_a_network_error() -> None:
    missing = {"type": "build_not_found", "title": "Not found", "status": 404, "detail": "no"}
    gateway = Recorder(lambda _: httpx.Response(404, json=missing))
    with gateway.client() as client, pytest.raises(ApiError) as raised:
        list(client.events(BUILD))
    assert raised.value.type == "build_not_found"

    cut = [_sse("1-0", "build.status_changed", status="running")]
    gateway = Recorder(lambda _: httpx.Response(200, headers=SSE, stream=_Chunks(cut, cut=True)))
    seen: list[Event] = []
    with gateway.client() as client, pytest.raises(NetworkError, match="peer closed"):
        seen.extend(client.events(BUILD))
    assert [e.id for e in seen] == ["1-0"]


def test_the_admin_client_sends_the_admin_token_and_reads_its_answers() -> None:
    demo = {"user_id": "u", "project_id": "p", "token": "t"}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/admin/demo":
            return httpx.Response(201, json=demo)
        if request.url.path.endswith("/tier"):
            return httpx.Response(200, json={"user_id": "u", "tier": "pro", "previous_tier": "b"})
        return httpx.Response(201, json={"id": "new"})

    gateway = Recorder(answer)
    with AdminClient("http://gw", "adm", transport=httpx.MockTransport(gateway)) as admin:
        seeded = admin.seed_demo()
        assert (seeded.user_id, seeded.project_id, seeded.token) == ("u", "p", "t")
        assert admin.create_user("a@b.c", tier="pro") == "new"
        assert admin.set_tier("u", "pro").previous_tier == "b"
    assert {r.headers["authorization"] for r in gateway.requests} == {"Bearer adm"}
    assert json.loads(gateway.requests[1].content) == {"email": "a@b.c", "tier": "pro"}
