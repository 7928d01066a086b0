"""What every command that calls the gateway shares: the options (token, gateway URL,
``--json``), the client (``cofounder_client``, imported when a command runs: ``--help`` never
needs httpx) and how an error is shown.

An error exits 1 and goes to stderr: ``error: 404 Not found: no build ...`` (the problem's
status, title and detail), or ``error: cannot reach the gateway at URL: ...``; with ``--json``,
one JSON object instead, the problem's fields (``type``, ``title``, ``status``, ``detail``, and
any others it has, e.g. ``errors`` of a 422); a gateway that did not answer is
``{"type": "gateway_unreachable", "status": null, ...}``. Stdout holds results only.

A command declares the options once: ``@founder_command(app)`` or ``@admin_command(app)`` adds
them to its own and passes it a :class:`Gateway` (the open client, the URL, ``--json``) first.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Concatenate, Generic, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from cofounder_client import AdminClient, CofounderClient, CofounderError

__all__ = [
    "DEFAULT_ADMIN_TOKEN",
    "DEFAULT_GATEWAY",
    "AdminOpt",
    "Gateway",
    "GatewayOpt",
    "JsonOpt",
    "TokenOpt",
    "admin_client",
    "admin_command",
    "emit",
    "fail",
    "founder_client",
    "founder_command",
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
    """Calls to the gateway inside: an error is shown (:func:`fail`) and exits 1. So is an
    answer the client cannot read (a field missing or of another type: a gateway of another
    release, or something else answering at its URL), instead of a traceback."""
    from cofounder_client import CofounderError

    try:
        yield
    except CofounderError as error:
        fail(error, as_json)
    except (KeyError, TypeError) as error:
        detail = (
            f"the gateway's answer is not one this client reads ({type(error).__name__}: "
            f"{error}); is it another release of the gateway, or something else at its URL?"
        )
        if as_json:
            problem = {
                "type": "unexpected_answer",
                "title": "Unexpected answer",
                "status": None,
                "detail": detail,
            }
            typer.echo(json.dumps(problem), err=True)
        else:
            typer.echo(f"error: {detail}", err=True)
        raise typer.Exit(1) from None


def emit(value: Any, as_json: bool, human: str) -> None:
    """``value`` as JSON with ``as_json``, else the ``human`` text."""
    typer.echo(json.dumps(value) if as_json else human)


ClientT = TypeVar("ClientT")


@dataclass(frozen=True)
class Gateway(Generic[ClientT]):
    """What a :func:`founder_command` or :func:`admin_command` is given first: the open client,
    the gateway's URL and whether ``--json`` was asked for."""

    client: ClientT
    url: str
    as_json: bool

    def emit(self, value: Any, human: str) -> None:
        """``value`` as JSON with ``--json``, else the ``human`` text."""
        emit(value, self.as_json, human)

    def created(self, row_id: str) -> None:
        """What a command that creates a row prints: its id (``{"id": ...}`` with ``--json``)."""
        self.emit({"id": row_id}, row_id)


def founder_command(
    app: typer.Typer, name: str | None = None, *, with_json: bool = True
) -> Callable[[Callable[Concatenate[Gateway[CofounderClient], ...], None]], Callable[..., None]]:
    """``app.command(name)`` for a command of the founder's routes: adds ``--token`` (after the
    command's required parameters), ``--gateway-url`` and ``--json`` (unless ``with_json`` is
    false) and runs the command with a :class:`CofounderClient`."""
    trailing = [_param("gateway_url", GatewayOpt, DEFAULT_GATEWAY)]
    if with_json:
        trailing.append(_param("json_", JsonOpt, False))
    token = _param("token", TokenOpt)
    return _gateway_command(app, name, founder_client, token.name, [token], trailing)


def admin_command(
    app: typer.Typer, name: str | None = None
) -> Callable[[Callable[Concatenate[Gateway[AdminClient], ...], None]], Callable[..., None]]:
    """``app.command(name)`` for a command of the admin routes: adds ``--gateway-url``,
    ``--admin-token`` and ``--json`` and runs the command with an :class:`AdminClient`."""
    trailing = [
        _param("gateway_url", GatewayOpt, DEFAULT_GATEWAY),
        _param("admin_token", AdminOpt, DEFAULT_ADMIN_TOKEN),
        _param("json_", JsonOpt, False),
    ]
    return _gateway_command(app, name, admin_client, "admin_token", [], trailing)


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation
    )


def _gateway_command(
    app: typer.Typer,
    name: str | None,
    open_client: Callable[[str, str], Any],
    token_name: str,
    required: list[inspect.Parameter],
    trailing: list[inspect.Parameter],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a command whose signature (what Typer reads) is its own without the first
    parameter, the ``required`` options after its required parameters, the ``trailing`` ones
    last; each run opens the client (the URL, the ``token_name`` option) inside
    :func:`shown_errors`."""

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(func).parameters.values())[1:]
        cut = next((i for i, p in enumerate(own) if p.default is not p.empty), len(own))
        params = [*own[:cut], *required, *own[cut:], *trailing]

        @functools.wraps(func)
        def command(**options: Any) -> None:
            url, token = options.pop("gateway_url"), options.pop(token_name)
            as_json = options.pop("json_", False)
            with shown_errors(as_json), open_client(url, token) as client:
                func(Gateway(client, url, as_json), **options)

        # The command's own annotations are strings (``from __future__ import annotations``):
        # resolved in its module, as Typer would, for the signature Typer reads instead.
        command.__annotations__ = {p.name: p.annotation for p in params}
        hints = typing.get_type_hints(command, include_extras=True)
        command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(annotation=hints[p.name]) for p in params], return_annotation=None
        )
        command.__annotations__ = {**hints, "return": None}
        app.command(name)(command)
        return command

    return decorate
