"""The API's documentation pages, Swagger UI (``/docs``) and ReDoc (``/redoc``), with every
script, style sheet and icon served by the gateway itself.

FastAPI's default pages load them from public CDNs (and ReDoc its fonts from Google): an offline
or locked-down deployment shows blank pages, and any deployment runs third-party code next to a
bearer-token field. The assets come from the ``fastapi-offline`` wheel (Swagger UI's bundle and
CSS, ReDoc's standalone bundle), pinned by ``uv.lock`` like any other dependency; only its files
are used, served with FastAPI's documented self-hosting recipe (``docs_url=None`` and the
``get_swagger_ui_html``/``get_redoc_html`` helpers).

Also the document's stable parts: :data:`TAGS` (the groups of operations, in the pages' order)
and :func:`operation_id` (each operation's ``operationId`` is its route's ``name``, so a client
generated from the document keeps its method names when a path or a Python function changes);
and :func:`examples`, a model's examples kept whole (FastAPI's encoder drops every ``null`` from
the document, examples' too: a build's example has several).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_URL", "TAGS", "docs_router", "examples", "operation_id"]

#: Where the pages' assets are served.
ASSETS_URL = "/docs-assets"
_ASSETS = Path(fastapi_offline.__file__).parent / "static"

#: The OpenAPI tags, in the order the documentation pages show them.
TAGS: list[dict[str, Any]] = [
    {
        "name": "builds",
        "description": "Start a build of one of your projects, read it, follow its events "
        "live (Server-Sent Events), cancel it. Needs a founder's token (founderToken).",
    },
    {
        "name": "usage",
        "description": "Your spend per day, today's budget and gate, a build's spend by model.",
    },
    {
        "name": "admin",
        "description": "Seeding users, projects, idea briefs and interviews; any user's usage, "
        "top-ups and plan changes. Needs the admin token (adminToken).",
    },
    {"name": "health", "description": "Liveness and readiness, open to anyone."},
]


#: Component schemas' examples, by model name (see :func:`examples`).
_EXAMPLES: dict[str, list[Any]] = {}


def examples(model: str, *values: Any) -> Callable[[dict[str, Any], type[Any]], None]:
    """A model's ``json_schema_extra``: its schema's ``examples`` are ``values``, nulls
    included (put back into the document after FastAPI dropped them); only the schema of the
    model named ``model``, not of a subclass (whose fields differ)."""
    _EXAMPLES[model] = list(values)

    def extra(schema: dict[str, Any], cls: type[Any]) -> None:
        if cls.__name__ == model:
            schema["examples"] = copy.deepcopy(list(values))

    return extra


def _keep_examples(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        document = build()
        if fresh:
            schemas = document.get("components", {}).get("schemas", {})
            for name, values in _EXAMPLES.items():
                if name in schemas:
                    schemas[name]["examples"] = copy.deepcopy(values)
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def operation_id(route: APIRoute) -> str:
    """A route's ``operationId``: its ``name`` (the ``name=`` given to its decorator), unique
    across the API (FastAPI warns of a duplicate)."""
    return route.name


def docs_router(app: FastAPI) -> APIRouter:
    """``/docs`` and ``/redoc`` for ``app`` (created with ``docs_url=None, redoc_url=None``);
    mounts the assets under :data:`ASSETS_URL` on ``app``, and keeps the document's examples
    whole (:func:`examples`)."""
    _keep_examples(app)
    app.mount(ASSETS_URL, StaticFiles(directory=_ASSETS), name="docs-assets")
    router = APIRouter(include_in_schema=False)

    def _urls(request: Request) -> tuple[str, str]:
        root = str(request.scope.get("root_path", ""))
        return f"{root}{app.openapi_url}", f"{root}{ASSETS_URL}"

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi, assets = _urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            oauth2_redirect_url=None,
            # No badge from swagger.io's online validator: the page calls nothing outside.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        openapi, assets = _urls(request)
        return get_redoc_html(
            openapi_url=openapi,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )

    return router
