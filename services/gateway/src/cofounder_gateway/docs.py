"""The API's documentation pages, Swagger UI (``/docs``) and ReDoc (``/redoc``), with every
script, style sheet and icon served by the gateway itself.

FastAPI's default pages load them from public CDNs (and ReDoc its fonts from Google): an offline
or locked-down deployment shows blank pages, and any deployment runs third-party code next to a
bearer-token field. The assets come from the ``fastapi-offline`` wheel (Swagger UI's bundle and
CSS, ReDoc's standalone bundle), pinned by ``uv.lock`` like any other dependency; only its files
are used, served with FastAPI's documented self-hosting recipe (``docs_url=None`` and the
``get_swagger_ui_html``/``get_redoc_html`` helpers).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_URL", "docs_router"]

#: Where the pages' assets are served.
ASSETS_URL = "/docs-assets"
_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def docs_router(app: FastAPI) -> APIRouter:
    """``/docs`` and ``/redoc`` for ``app`` (created with ``docs_url=None, redoc_url=None``);
    mounts the assets under :data:`ASSETS_URL` on ``app``."""
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
