"""One error format everywhere: RFC 9457 problem details (``application/problem+json``).

Every error body has ``type`` (a stable machine-readable code), ``title``, ``status`` and
``detail``; validation errors add ``errors`` naming each field.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "BAD_CURSOR",
    "NOT_THIS_BUILD",
    "NO_BUILD",
    "ApiError",
    "FieldError",
    "Problem",
    "ValidationProblem",
    "install",
    "problem",
    "problem_responses",
]

MEDIA_TYPE = "application/problem+json"
_REF = "#/components/schemas/{model}"
_RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_WWW_AUTHENTICATE = {
    "description": "The scheme to authenticate with: Bearer.",
    "required": True,
    "schema": {"type": "string"},
}
_log = structlog.get_logger("cofounder.gateway")


class ApiError(Exception):
    """An error with a stable ``code`` the client can branch on."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers
        self.extra = extra


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Unavailable",
}


class Problem(BaseModel):
    """An error (RFC 9457). ``type`` is a stable code to branch on; some problems carry more
    fields (e.g. ``limit`` and ``active`` with ``too_many_active_builds``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A stable, machine-readable code, e.g. build_not_found.")
    title: str
    status: int
    detail: str = Field(description="What happened and what to do, for people.")


class FieldError(BaseModel):
    """One refused input."""

    field: str = Field(description="Dotted path of the input, e.g. goal or answers.core.")
    in_: str = Field(alias="in", description="body, path, query or header.")
    message: str
    kind: str = Field(description="A stable code of the rule broken, e.g. string_too_long.")


class ValidationProblem(Problem):
    """422: the request's inputs; each refused one is named in errors."""

    errors: list[FieldError]


#: What each error status means on this API (the OpenAPI descriptions).
_MEANINGS = {
    400: "Malformed request (a body that is not JSON text, a cursor or Last-Event-ID this API "
    "did not issue)",
    401: "No valid bearer token (or not the admin token)",
    403: "The credential is valid but not for this resource",
    404: "Not found, or not yours",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid input: every refused field is named in errors",
    429: "Too many: retry after Retry-After seconds",
    503: "Unavailable",
}

#: Descriptions several routes give a status (``problem_responses(..., s404=NO_BUILD)``).
NO_BUILD = "No such build of yours (type: build_not_found)"
BAD_CURSOR = "Not a cursor this API returned (type: invalid_cursor)"
NOT_THIS_BUILD = "The stream token is for another build (type: token_not_for_build)"

_SOME_ID = "0b4e6c1e-8d0a-4f5e-9c1b-2a3d4e5f6a7b"
#: Example problems by ``type``: the status, the detail and any further fields, as the server
#: words them (the OpenAPI examples of each error response).
_EXAMPLES: dict[str, tuple[int, str, dict[str, Any]]] = {
    "invalid_json": (400, "the request body is not valid JSON: Expecting value (at 0)", {}),
    "invalid_cursor": (400, "the cursor is not one this API returned", {}),
    "invalid_last_event_id": (
        400,
        "Last-Event-ID is not an event id: send the id: of an event this stream sent",
        {},
    ),
    "unauthenticated": (401, "send 'Authorization: Bearer <token>'", {}),
    "invalid_token": (401, "the token is not valid", {}),
    "token_expired": (401, "the token has expired; get a new one", {}),
    "build_not_found": (404, f"no build {_SOME_ID}", {}),
    "project_not_found": (404, f"no project {_SOME_ID}", {}),
    "screenshot_not_found": (
        404,
        f"build {_SOME_ID} has no screenshot named 00007-toolu_01S.png",
        {},
    ),
    "user_not_found": (404, f"no user {_SOME_ID}", {}),
    "log_not_archived": (
        404,
        f"build {_SOME_ID} has no log archive (yet): a build's log is archived when it ends",
        {},
    ),
    "email_taken": (409, "a user with email ada@example.com exists", {}),
    "idempotency_key_reused": (
        409,
        "this Idempotency-Key was used for a different request",
        {"build_id": _SOME_ID},
    ),
    "build_finished": (409, "the build is already ready", {"build_status": "ready"}),
    "payload_too_large": (413, "request bodies are limited to 65536 bytes", {}),
    "invalid_request": (
        422,
        "invalid field(s): goal",
        {
            "errors": [
                {
                    "field": "goal",
                    "in": "body",
                    "message": "String should have at most 2000 characters",
                    "kind": "string_too_long",
                }
            ]
        },
    ),
    "unknown_tier": (
        422,
        "tier must be one of bootstrapper, founder, pro",
        {
            "field": "tier",
            "tiers": ["bootstrapper", "founder", "pro"],
            "errors": [
                {
                    "field": "tier",
                    "in": "body",
                    "message": "must be one of bootstrapper, founder, pro",
                    "kind": "unknown_tier",
                }
            ],
        },
    ),
    "too_many_active_builds": (
        429,
        "your bootstrapper plan allows 1 active build(s) at once and you have 1; wait for one "
        "to finish or cancel one",
        {"limit": 1, "active": 1},
    ),
    "too_many_streams": (429, "you have 10 live event streams open; close one first", {}),
    "autonomous_agent_off": (503, "autonomous builds are switched off on this deployment", {}),
    "not_ready": (503, "a dependency is unreachable: ConnectionError", {}),
}
#: The examples of a status whose description names no ``type``.
_DEFAULT_EXAMPLES = {
    400: ("invalid_json",),
    401: ("unauthenticated", "invalid_token", "token_expired"),
    413: ("payload_too_large",),
    422: ("invalid_request",),
}
#: ``(type: build_not_found)`` or ``(build_not_found)`` in a description.
_NAMED_TYPE = re.compile(r"\((?:type: )?([a-z_]+)\)")


def _examples(status: int, description: str) -> dict[str, dict[str, Any]]:
    named = tuple(c for c in _NAMED_TYPE.findall(description) if c in _EXAMPLES)
    codes = named or _DEFAULT_EXAMPLES.get(status, ())
    examples: dict[str, dict[str, Any]] = {}
    for code in codes:
        code_status, detail, extra = _EXAMPLES[code]
        if code_status != status:
            continue
        body = {"type": code, "title": _TITLES[status], "status": status, "detail": detail}
        examples[code] = {"summary": code, "value": {**body, **extra}}
    return examples


def problem_responses(*statuses: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error statuses: a :class:`Problem` body
    (:class:`ValidationProblem` for 422) as ``application/problem+json``, with an example of
    each ``type`` the description names (else the status's usual ones). ``meanings`` replace
    the generic descriptions, keyed ``s<status>`` (e.g. ``s503="Builds are switched off"``);
    a description naming a type, ``(type: build_not_found)``, gets its example."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = meanings.get(f"s{status}", _MEANINGS.get(status, _TITLES[status]))
        model = "ValidationProblem" if status == 422 else "Problem"
        content: dict[str, Any] = {"schema": {"$ref": _REF.format(model=model)}}
        examples = _examples(status, description)
        if examples:
            content["examples"] = examples
        response: dict[str, Any] = {"description": description, "content": {MEDIA_TYPE: content}}
        if status == 429:
            response["headers"] = {"Retry-After": _RETRY_AFTER}
        responses[status] = response
    return responses


def problem(
    status: int, code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """A problem+json response."""
    body = {
        "type": code,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


class CatchCrashes:
    """ASGI middleware: an exception no handler took becomes the 500 problem, logged once.

    Starlette's ``ServerErrorMiddleware`` answers such an exception and then re-raises it, so
    uvicorn logs the traceback a second time and closes the kept-alive connection: a client's
    next request on it is reset instead of answered. Caught here, below it, the connection
    stays usable. An exception after the response started (a broken event stream) still goes
    up: the server can only end that connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            _log.error("request failed", method=scope["method"], path=scope["path"], exc_info=exc)
            response = problem(500, "internal_error", "the server failed; the error is logged")
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Route every error the app can raise through :func:`problem`, and document them so.
    Unhandled exceptions are :class:`CatchCrashes`'s: add it as the outermost middleware."""
    _document_problems(app)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        malformed = next((e for e in exc.errors() if e["type"] == "json_invalid"), None)
        if malformed is not None:
            # Not an invalid field: no JSON text to find fields in (400, as documented).
            reason = malformed.get("ctx", {}).get("error") or malformed["msg"]
            at = malformed["loc"][-1] if len(malformed["loc"]) > 1 else None
            where = f" (at {at})" if isinstance(at, int) else ""
            return problem(
                400, "invalid_json", f"the request body is not valid JSON: {reason}{where}"
            )
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
                "in": str(e["loc"][0]),
                "message": e["msg"],
                "kind": e["type"],
            }
            for e in exc.errors()
        ]
        fields = ", ".join(e["field"] for e in errors)
        return problem(422, "invalid_request", f"invalid field(s): {fields}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's only 400: a body its parser gave up on without a JSON error (nested
            # too deeply for the parser, say). Ours are ApiErrors. Documented: invalid_json.
            detail = (
                "the request body is not valid JSON: it could not be parsed (too deeply nested?)"
            )
            return problem(400, "invalid_json", detail)
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(
            exc.status_code,
            code,
            str(exc.detail),
            headers=dict(exc.headers) if exc.headers else None,
        )


def _fit_validation_example(operation: dict[str, Any], content: dict[str, Any]) -> None:
    """Make the generic 422 example (``invalid_request``) name one of the operation's own
    inputs: a body's unknown field, else a path id, else a bounded query number."""
    example = content.get("examples", {}).get("invalid_request")
    if example is None:
        return
    parameters = operation.get("parameters", [])
    paths = [p["name"] for p in parameters if p["in"] == "path"]
    bounded = [p for p in parameters if p["in"] == "query" and "maximum" in p["schema"]]
    if "requestBody" in operation:
        if "StartBuild" in str(operation["requestBody"]):  # the static example: the goal's
            return
        error = {
            "field": "colour",
            "in": "body",
            "message": "Extra inputs are not permitted",
            "kind": "extra_forbidden",
        }
    elif paths:
        error = {
            "field": paths[-1],
            "in": "path",
            "message": f"must be a UUID such as {_SOME_ID}",
            "kind": "uuid",
        }
    elif bounded:
        error = {
            "field": bounded[0]["name"],
            "in": "query",
            "message": f"Input should be less than or equal to {bounded[0]['schema']['maximum']}",
            "kind": "less_than_equal",
        }
    else:
        return
    example["value"] = {
        **example["value"],
        "detail": f"invalid field(s): {error['field']}",
        "errors": [error],
    }


def _document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the server sends: every error response (4xx, 5xx) is
    ``application/problem+json`` with a :class:`Problem` (422: :class:`ValidationProblem`);
    a 401 of an operation that takes a bearer token carries ``WWW-Authenticate``.

    :func:`problem_responses` documents the errors a route declares. FastAPI adds its own 422
    (``HTTPValidationError``, a body this API never sends) to every route with inputs that
    declares none, and files any other response model under ``application/json``: both are
    rewritten here, once, when the document is first built."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        validation = ValidationProblem.model_json_schema(ref_template=_REF)
        schemas.update(validation.pop("$defs", {}))
        schemas["ValidationProblem"] = validation
        schemas["Problem"] = Problem.model_json_schema(ref_template=_REF)
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    if status[0] not in "45":
                        continue
                    model = "ValidationProblem" if status == "422" else "Problem"
                    content = response.get("content", {}).get(MEDIA_TYPE, {})
                    content["schema"] = {"$ref": _REF.format(model=model)}
                    response["content"] = {MEDIA_TYPE: content}
                    if status == "422" and response.get("description") == "Validation Error":
                        response["description"] = _MEANINGS[422]
                        response["content"][MEDIA_TYPE].update(
                            examples=_examples(422, _MEANINGS[422])
                        )
                    if status == "422":
                        _fit_validation_example(operation, response["content"][MEDIA_TYPE])
                    if status == "401" and operation.get("security"):
                        response.setdefault("headers", {})["WWW-Authenticate"] = _WWW_AUTHENTICATE
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point
