"""The build page under ``/app``: static HTML, JavaScript and CSS shipped inside this package
(``cofounder_gateway/page/``), served as they are: no build step, nothing from a CDN.

- ``/app/``: the founder's builds; ``/app/builds/{id}``: one build, live; ``/app/admin``: the
  operator's view (admin token).
- ``/app/static/{name}``: the page's scripts and stylesheet, read once at import (a fixed set of
  files, so no path from a request ever reaches the file system).

Every answer forbids what the page does not need (a Content-Security-Policy of ``'self'`` only,
no framing, no referrer). Not in the OpenAPI document: these are pages, not the API. Why a page
in the gateway, and how it signs in: ``docs/adr/0008-build-page.md``.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Annotated, Final

from fastapi import APIRouter, Header, Path, Response
from fastapi.responses import RedirectResponse

from cofounder_gateway.problems import ApiError

__all__ = ["ASSETS", "SECURITY_HEADERS", "router"]

#: What every page answer carries: scripts, styles and connections from this origin alone.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def _load() -> dict[str, tuple[bytes, str, str]]:
    """Every file of ``page/``: name -> (content, media type, ETag)."""
    found: dict[str, tuple[bytes, str, str]] = {}
    for item in resources.files("cofounder_gateway").joinpath("page").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in _TYPES:
            body = item.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            found[item.name] = (body, _TYPES[suffix], etag)
    return found


#: The page's files, by name.
ASSETS: Final = _load()

router = APIRouter(include_in_schema=False)


def _send(name: str, if_none_match: str | None) -> Response:
    asset = ASSETS.get(name)
    if asset is None:
        raise ApiError(404, "not_found", f"no file {name} here")
    body, media_type, etag = asset
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


_IfNoneMatch = Annotated[str | None, Header()]


@router.get("/app")
async def app_root() -> RedirectResponse:
    return RedirectResponse("/app/", status_code=308)


@router.get("/app/")
async def builds_page(if_none_match: _IfNoneMatch = None) -> Response:
    return _send("builds.html", if_none_match)


@router.get("/app/builds/{build_id}")
async def build_page(
    build_id: Annotated[str, Path(max_length=100)], if_none_match: _IfNoneMatch = None
) -> Response:
    """One build's page; the page itself reads the build (a wrong id shows "no such build")."""
    return _send("build.html", if_none_match)


@router.get("/app/admin")
async def admin_page(if_none_match: _IfNoneMatch = None) -> Response:
    return _send("admin.html", if_none_match)


@router.get("/app/static/{name}")
async def asset(
    name: Annotated[str, Path(max_length=100)], if_none_match: _IfNoneMatch = None
) -> Response:
    if name.endswith(".html"):
        raise ApiError(404, "not_found", f"no file {name} here")
    return _send(name, if_none_match)
