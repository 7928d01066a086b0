"""The build page under ``/app``: static HTML, JavaScript and CSS shipped inside this package
(``cofounder_gateway/page/``), served as they are: no build step, nothing from a CDN.

- ``/app/``: the founder's builds; ``/app/builds/{id}``: one build, live; ``/app/admin``: the
  operator's view (admin token).
- ``/app/static/{name}``: the page's scripts and stylesheet, read once at import (a fixed set of
  files, so no path from a request ever reaches the file system).
- The three pages share one layout (``page/parts/layout.html``: head, header, sign-in form),
  filled at import with each page's title, script, navigation and content; the two lists of
  builds share one table (``page/parts/build-list.html``), filled with its caption and columns.

Every answer forbids what the page does not need (a Content-Security-Policy of ``'self'`` only,
no framing, no referrer). Not in the OpenAPI document: these are pages, not the API. Why a page
in the gateway, and how it signs in: ``docs/adr/0008-build-page.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Header, Path, Response
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


_FOUNDER_SIGN_IN: Final = {
    "sign_in_title": "Sign in",
    "sign_in_help": (
        "<p>\n"
        "        Open the link that <code>cofounder dev</code> prints, or paste a bearer token\n"
        "        (<code>cofounder token mint --user ID</code>). "
        "This tab keeps it until you close it.\n"
        "      </p>"
    ),
    "token_label": "Bearer token",
}
_OPERATOR_SIGN_IN: Final = {
    "sign_in_title": "Operator sign-in",
    "sign_in_help": (
        "<p>Paste the gateway's admin token (<code>ADMIN_TOKEN</code>). "
        "This tab keeps it until you close it.</p>"
    ),
    "token_label": "Admin token",
}


def _build_list(caption: str, columns: list[str]) -> dict[str, str]:
    """The slots of a page's list of builds (``{{build_list}}``: ``page/parts/build-list.html``)."""
    return {
        "list_caption": caption,
        "list_columns": "".join(f'            <th scope="col">{c}</th>\n' for c in columns),
    }


#: The pages: each is ``page/parts/layout.html`` (head, header, sign-in form) around its own
#: content (``page/parts/{name}``), filled with these.
_PAGES: Final = {
    "builds.html": {
        "title": "Your builds",
        "script": "builds.js",
        "nav": '<a href="/app/" aria-current="page">Your builds</a>',
        **_FOUNDER_SIGN_IN,
        **_build_list(
            "Your builds, newest first",
            ["Build", "Goal", "Status", "Started", "Iterations", "Tokens", "Preview"],
        ),
    },
    "build.html": {
        "title": "Build",
        "script": "build.js",
        "nav": '<a href="/app/">Your builds</a>',
        **_FOUNDER_SIGN_IN,
    },
    "admin.html": {
        "title": "Operator view",
        "script": "admin.js",
        "nav": '<a href="/app/admin" aria-current="page">Operator view</a>',
        **_OPERATOR_SIGN_IN,
        **_build_list(
            "Builds across founders, newest first",
            [
                "Build",
                "Founder",
                "Status",
                "Since",
                "Tier",
                "Iterations",
                "Tool calls",
                "Tokens",
                "Reason",
            ],
        ),
    },
}


def _asset(name: str, body: bytes) -> tuple[bytes, str, str]:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return body, _TYPES["." + name.rpartition(".")[2]], etag


def _load() -> dict[str, tuple[bytes, str, str]]:
    """Every page and every file of ``page/``: name -> (content, media type, ETag)."""
    folder = resources.files("cofounder_gateway").joinpath("page")
    found: dict[str, tuple[bytes, str, str]] = {}
    for item in folder.iterdir():
        if item.is_file() and "." + item.name.rpartition(".")[2] in _TYPES:
            found[item.name] = _asset(item.name, item.read_bytes())
    parts = folder.joinpath("parts")

    def part(name: str) -> str:
        return parts.joinpath(name).read_text(encoding="utf-8")

    layout, build_list = part("layout.html"), part("build-list.html")
    for name, slots in _PAGES.items():
        # The page's content, the list of builds it may hold (a line of its own), its slots.
        page = layout.replace("{{content}}", part(name)).replace("{{build_list}}\n", build_list)
        for slot, value in slots.items():
            page = page.replace("{{" + slot + "}}", value)
        found[name] = _asset(name, page.encode())
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


def _page(name: str) -> Callable[[str | None], Awaitable[Response]]:
    """The route of the page ``name``."""

    async def page(if_none_match: _IfNoneMatch = None) -> Response:
        return _send(name, if_none_match)

    return page


def _bounded_build_id(build_id: Annotated[str, Path(max_length=100)]) -> None:
    """The build page's id is only bounded: the page itself reads the build (a wrong id shows
    "no such build")."""


router.add_api_route("/app/", _page("builds.html"), name="builds_page")
router.add_api_route(
    "/app/builds/{build_id}",
    _page("build.html"),
    name="build_page",
    dependencies=[Depends(_bounded_build_id)],
)
router.add_api_route("/app/admin", _page("admin.html"), name="admin_page")


@router.get("/app/static/{name}")
async def asset(
    name: Annotated[str, Path(max_length=100)], if_none_match: _IfNoneMatch = None
) -> Response:
    if name.endswith(".html"):
        raise ApiError(404, "not_found", f"no file {name} here")
    return _send(name, if_none_match)
