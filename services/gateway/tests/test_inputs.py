"""Hostile input is refused at the edge, before any I/O: the app runs in process over stand-ins for
the database, Redis, the feed and the relay that fail the request (and record it) when used."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import jwt
import pytest

from cofounder_gateway.app import Gateway, create_app
from cofounder_gateway.auth import mint_token
from cofounder_gateway.inputs import is_stream_id
from cofounder_gateway.settings import GatewaySettings

SECRET = "an-inputs-test-secret-of-enough-length-0123"
ADMIN = {"Authorization": "Bearer inputs-admin"}
USER = str(uuid.uuid4())
FOUNDER = {"Authorization": f"Bearer {mint_token(SECRET, USER)}"}
ID = str(uuid.uuid4())
NUL = "a\x00b"


class Tripwire:
    """Any public attribute is another tripwire; calling one records the use and fails."""

    def __init__(self, used: list[str], name: str) -> None:
        self._used = used
        self._name = name

    def __getattr__(self, name: str) -> Tripwire:
        if name.startswith("_"):  # introspection (tracebacks, reprs) finds nothing here
            raise AttributeError(name)
        return Tripwire(self._used, f"{self._name}.{name}")

    def __call__(self, *args: object, **kwargs: object) -> None:
        self._used.append(self._name)
        raise AssertionError(f"I/O before the input was checked: {self._name}()")


@pytest.fixture
async def edge() -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    used: list[str] = []
    settings = GatewaySettings(
        environment="development",
        jwt_secret=SECRET,
        admin_token="inputs-admin",
    )
    stand_ins = {
        name: cast(Any, Tripwire(used, name)) for name in ("engine", "redis", "feed", "pg_pool")
    }
    app = create_app(
        Gateway(settings=settings, relay=cast(Any, Tripwire(used, "relay")), **stand_ins)
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client, used


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


START = f"/v1/projects/{ID}/builds"
USERS = "/v1/admin/users"
PROJECTS = "/v1/admin/projects"
SESSIONS = f"/v1/admin/projects/{ID}/understanding-sessions"
A = "a@b.io"

# (method, url, body, headers, the refused field)
REFUSED: list[tuple[str, str, dict[str, Any] | None, dict[str, str], str]] = [
    # The founder's routes.
    ("POST", START, {"goal": NUL}, FOUNDER, "goal"),
    ("POST", START, {"goal": "x" * 2_001}, FOUNDER, "goal"),
    ("POST", START, {}, {**FOUNDER, "Idempotency-Key": "k" * 201}, "idempotency-key"),
    ("POST", "/v1/projects/not-a-uuid/builds", {}, FOUNDER, "project_id"),
    ("POST", f"/v1/projects/{ID}%00/builds", {}, FOUNDER, "project_id"),
    ("POST", "/v1/projects/%00/builds", {}, FOUNDER, "project_id"),
    ("GET", "/v1/builds/not-a-uuid", None, FOUNDER, "build_id"),
    ("GET", f"/v1/builds/{ID}x", None, FOUNDER, "build_id"),
    ("GET", "/v1/builds/%00", None, FOUNDER, "build_id"),
    ("POST", "/v1/builds/not-a-uuid/cancel", None, FOUNDER, "build_id"),
    ("GET", "/v1/builds/not-a-uuid/events", None, FOUNDER, "build_id"),
    ("GET", "/v1/builds/not-a-uuid/usage", None, FOUNDER, "build_id"),
    ("GET", "/v1/builds?cursor=%00", None, FOUNDER, "cursor"),
    ("GET", "/v1/builds?cursor=" + "A" * 201, None, FOUNDER, "cursor"),
    # The admin's routes, bodies and ids.
    ("POST", USERS, {"email": "a\x00@b.io"}, ADMIN, "email"),
    ("POST", USERS, {"email": "a" * 320 + "@b.io"}, ADMIN, "email"),
    ("POST", USERS, {"email": A, "tier": NUL}, ADMIN, "tier"),
    ("POST", USERS, {"email": A, "tier": "t" * 41}, ADMIN, "tier"),
    ("POST", USERS, {"email": A, "suspension_reason": NUL}, ADMIN, "suspension_reason"),
    ("POST", USERS, {"email": A, "suspension_reason": "r" * 2_001}, ADMIN, "suspension_reason"),
    ("POST", PROJECTS, {"owner_id": "not-a-uuid", "name": "P"}, ADMIN, "owner_id"),
    ("POST", PROJECTS, {"owner_id": NUL, "name": "P"}, ADMIN, "owner_id"),
    ("POST", PROJECTS, {"owner_id": ID, "name": NUL}, ADMIN, "name"),
    ("POST", PROJECTS, {"owner_id": ID, "name": "n" * 201}, ADMIN, "name"),
    ("POST", PROJECTS, {"owner_id": ID, "name": "P", "stage": NUL}, ADMIN, "stage"),
    ("POST", PROJECTS, {"owner_id": ID, "name": "P", "stage": "s" * 41}, ADMIN, "stage"),
    ("PUT", f"{PROJECTS}/not-a-uuid/idea-brief", {"content": {}}, ADMIN, "project_id"),
    ("PUT", f"{PROJECTS}/{ID}/idea-brief", {"content": {"a": [NUL]}}, ADMIN, "content"),
    ("PUT", f"{PROJECTS}/{ID}/idea-brief", {"content": {NUL: 1}}, ADMIN, "content"),
    ("POST", f"{PROJECTS}/%00/understanding-sessions", {"questions": []}, ADMIN, "project_id"),
    ("POST", SESSIONS, {"questions": [{"id": NUL, "text": "t"}]}, ADMIN, "questions.0.id"),
    ("POST", SESSIONS, {"questions": [{"id": "q", "text": NUL}]}, ADMIN, "questions.0.text"),
    ("POST", SESSIONS, {"questions": [], "answers": {"q": NUL}}, ADMIN, "answers.q"),
    ("POST", SESSIONS, {"questions": [], "answers": {NUL: "a"}}, ADMIN, "answers"),
    ("GET", "/v1/admin/users/not-a-uuid/usage", None, ADMIN, "user_id"),
    ("GET", f"{USERS}/{ID}/builds/%00/usage", None, ADMIN, "build_id"),
    ("GET", f"{USERS}/a%00b/builds/{ID}/usage", None, ADMIN, "user_id"),
    ("POST", f"{USERS}/not-a-uuid/top-ups", {"amount_micros": 5}, ADMIN, "user_id"),
    ("POST", f"{USERS}/{ID}/top-ups", {"amount_micros": 5, "note": NUL}, ADMIN, "note"),
    ("PUT", f"{USERS}/not-a-uuid/tier", {"tier": "pro"}, ADMIN, "user_id"),
    ("PUT", f"{USERS}/{ID}/tier", {"tier": NUL}, ADMIN, "tier"),
]


@pytest.mark.parametrize(("method", "url", "body", "headers", "field"), REFUSED)
async def test_hostile_input_is_422_before_any_io(
    edge: tuple[httpx.AsyncClient, list[str]],
    method: str,
    url: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
    field: str,
) -> None:
    client, used = edge
    response = await client.request(method, url, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "invalid_request"
    assert any(e["field"].startswith(field) for e in problem["errors"]), problem
    assert used == []


@pytest.mark.parametrize(
    ("method", "url", "body", "headers", "field"),
    [
        # JSON allows an unpaired surrogate; UTF-8, and so PostgreSQL, does not.
        ("POST", f"/v1/projects/{ID}/builds", b'{"goal": "\\ud800"}', FOUNDER, "goal"),
        (
            "PUT",
            f"/v1/admin/projects/{ID}/idea-brief",
            b'{"content": {"a": "\\ud800"}}',
            ADMIN,
            "content",
        ),
        (
            "POST",
            f"/v1/admin/projects/{ID}/understanding-sessions",
            b'{"questions": [], "answers": {"\\ud800": "a"}}',
            ADMIN,
            "answers.",
        ),
    ],
)
async def test_an_unpaired_surrogate_is_422_before_any_io(
    edge: tuple[httpx.AsyncClient, list[str]],
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    field: str,
) -> None:
    client, used = edge
    response = await client.request(
        method, url, content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"].startswith(field)
    assert used == []


@pytest.mark.parametrize(
    "raw",
    [
        "2026-01-01T00:00:00+00:00|not-a-uuid",
        f"2026-01-01T00:00:00+00:00|{ID}\x00",
        f"0001-01-01T00:00:00+01:00|{ID}",  # before year 1 in UTC
        f"not a time|{ID}",
    ],
)
async def test_a_cursor_this_api_did_not_issue_is_400_before_any_io(
    edge: tuple[httpx.AsyncClient, list[str]], raw: str
) -> None:
    client, used = edge
    response = await client.get("/v1/builds", params={"cursor": _cursor(raw)}, headers=FOUNDER)
    assert (response.status_code, response.json()["type"]) == (400, "invalid_cursor")
    assert used == []


@pytest.mark.parametrize("subject", ["fuzz-user", "", "x" * 36, f"{ID}\x00", 42])
async def test_a_token_whose_subject_is_no_user_id_is_401(
    edge: tuple[httpx.AsyncClient, list[str]], subject: object
) -> None:
    client, used = edge
    token = jwt.encode({"sub": subject, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    response = await client.get("/v1/builds", headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.json()["type"]) == (401, "invalid_token")
    assert used == []


@pytest.mark.parametrize(
    "last_event_id",
    [
        "1" * 38 + "-0",
        "18446744073709551616-0",  # 2**64
        "0-18446744073709551616",
        "1-",
        "-1",
        "12",  # the plain <ms> form: not an id this stream sends (refused before too)
        "+1-0",
        "\u00b2-0",  # a digit to str.isdigit (sent as Latin-1, as HTTP reads it), not to Redis
        "$",
        ">",
    ],
)
async def test_a_last_event_id_redis_would_refuse_is_400_before_the_stream(
    edge: tuple[httpx.AsyncClient, list[str]], last_event_id: str
) -> None:
    client, used = edge
    response = await client.get(
        f"/v1/builds/{ID}/events",
        headers={**FOUNDER, "Last-Event-ID": last_event_id.encode("latin-1")},
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "invalid_last_event_id"
    assert used == []


def test_stream_ids_are_the_range_redis_accepts() -> None:
    top = str(2**64 - 1)
    for good in ("0-0", "1-1", f"{top}-{top}", "0001-0"):
        assert is_stream_id(good), good
    for bad in (f"{2**64}-0", f"0-{2**64}", "1", "1-1-1", "a-1", "٣-1", ""):
        assert not is_stream_id(bad), bad
