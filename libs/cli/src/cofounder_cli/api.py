"""What every command that calls the gateway shares: the options (token, gateway URL,
``--json``), the client (``cofounder_client``, imported when a command runs: ``--help`` never
needs httpx) and how an error is shown.

An error exits 1 and goes to stderr: ``error: 404 Not found: no build ...`` (the problem's
status, title and detail), or ``error: cannot reach the gateway at URL: ...``; with ``--json``,
one JSON object instead, the problem's fields (``type``, ``title``, ``status``, ``detail``, and
any others it has, e.g. ``errors`` of a 422); a gateway that did not answer is
``{"type": "gateway_unreachable", "status": null, ...}``. Stdout holds results only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from cofounder_client import AdminClient, CofounderClient, CofounderError

__all__ = [
    "DEFAULT_ADMIN_TOKEN",
    "DEFAULT_GATEWAY",
    "AdminOpt",
    "GatewayOpt",
    "JsonOpt",
    "TokenOpt",
    "admin_client",
    "emit",
    "fail",
    "founder_client",
    "shown_errors",
]

#: The gateway ``cofounder serve gateway`` starts (``cofounder_client.DEFAULT_GATEWAY_URL``).
DEFAULT_GATEWAY = "http://127.0.0.1:8000"
#: The development admin token (``ENVIRONMENT=development``).
DEFAULT_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105 - the published development value

TokenOpt = Annotated[
    str,
    typer.Option(
        "--token",
        envvar="COFOUNDER_TOKEN",
        metavar="TOKEN",
        help="Your bearer token (cofounder seed demo prints one).",
    ),
]
GatewayOpt = Annotated[
    str,
    typer.Option(
        "--gateway-url",
        envvar=["COFOUNDER_GATEWAY_URL", "GATEWAY_URL"],
        metavar="URL",
        help="The gateway's base URL.",
    ),
]
AdminOpt = Annotated[
    str,
    typer.Option(
        "--admin-token", envvar="ADMIN_TOKEN", metavar="TOKEN", help="The admin API token."
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Machine-readable output: JSON on stdout; an error is a JSON problem object on "
        "stderr.",
    ),
]


def founder_client(gateway_url: str, token: str) -> CofounderClient:
    """A client of the founder's routes (imports httpx: call it inside a command)."""
    from cofounder_client import CofounderClient

    return CofounderClient(gateway_url, token)


def admin_client(gateway_url: str, admin_token: str) -> AdminClient:
    """A client of the admin routes (imports httpx: call it inside a command)."""
    from cofounder_client import AdminClient

    return AdminClient(gateway_url, admin_token)


def fail(error: CofounderError, as_json: bool) -> NoReturn:
    """Show ``error`` on stderr (a JSON problem object with ``as_json``) and exit 1."""
    from cofounder_client import ApiError

    if as_json:
        typer.echo(json.dumps(error.problem()), err=True)
    elif isinstance(error, ApiError):
        message = f"{error.title}: {error.detail}" if error.title else error.detail
        typer.echo(f"error: {error.status} {message}", err=True)
    else:
        typer.echo(f"error: {error}", err=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def shown_errors(as_json: bool) -> Iterator[None]:
    """Calls to the gateway inside: an error is shown (:func:`fail`) and exits 1."""
    from cofounder_client import CofounderError

    try:
        yield
    except CofounderError as error:
        fail(error, as_json)


def emit(value: Any, as_json: bool, human: str) -> None:
    """``value`` as JSON with ``as_json``, else the ``human`` text."""
    typer.echo(json.dumps(value) if as_json else human)
