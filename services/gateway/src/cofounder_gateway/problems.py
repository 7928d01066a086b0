"""One error format everywhere: RFC 9457 problem details (``application/problem+json``).

Every error body has ``type`` (a stable machine-readable code), ``title``, ``status`` and
``detail``; validation errors add ``errors`` naming each field.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ApiError",
    "FieldError",
    "Problem",
    "ValidationProblem",
    "install",
    "problem",
    "problem_responses",
]

MEDIA_TYPE = "application/problem+json"
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
    404: "Not found, or not yours",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid input: every refused field is named in errors",
    429: "Too many: retry after Retry-After seconds",
    503: "Unavailable",
}


def problem_responses(*statuses: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error statuses: a :class:`Problem` body
    (:class:`ValidationProblem` for 422) as ``application/problem+json``. ``meanings`` replace
    the generic descriptions, keyed ``s<status>`` (e.g. ``s503="Builds are switched off"``)."""
    return {
        status: {
            "model": ValidationProblem if status == 422 else Problem,
            "description": meanings.get(f"s{status}", _MEANINGS.get(status, _TITLES[status])),
        }
        for status in statuses
    }


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
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(
            exc.status_code,
            code,
            str(exc.detail),
            headers=dict(exc.headers) if exc.headers else None,
        )


_REF = "#/components/schemas/{model}"


def _document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the server sends: every error response (4xx, 5xx) is
    ``application/problem+json`` with a :class:`Problem` (422: :class:`ValidationProblem`).

    FastAPI files a response model under the route's media type (``application/json``) and adds
    its own 422 (``HTTPValidationError``, a body this API never sends) to every route with
    inputs; both are rewritten here, once, when the document is first built."""
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
                    if status[0] in "45":
                        model = "ValidationProblem" if status == "422" else "Problem"
                        ref = {"$ref": _REF.format(model=model)}
                        response["content"] = {MEDIA_TYPE: {"schema": ref}}
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point
