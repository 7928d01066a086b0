"""``cofounder db upgrade`` and ``cofounder db wait``: migrate the system of record, and wait
until it has the schema this release needs (Kubernetes init containers: docs/operations.md).

With ``LOG_JSON=true`` (as in the deployments' config) what they say is JSON lines, as the
services' logs are, Alembic's own lines included; otherwise plain text.
"""

from __future__ import annotations

import os
from typing import Annotated, Final

import typer

#: ``cofounder_runtime.settings.DEFAULT_DATABASE_URL`` (a test keeps the two equal), written out
#: here because the help shows it and importing ``cofounder_runtime`` takes most of a second.
DEFAULT_DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/cofounder"

app = typer.Typer(help="The database (migrations).", no_args_is_help=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(help=f"Default: $DATABASE_URL, else {DEFAULT_DATABASE_URL}."),
]


def _json_lines() -> bool:
    return os.environ.get("LOG_JSON", "").strip().lower() in {"1", "true", "yes", "on"}


def _say(message: str, *, error: bool = False, **fields: object) -> None:
    """One line: a JSON log line with ``LOG_JSON=true``, else ``message`` as text."""
    if _json_lines():
        import structlog

        log = structlog.get_logger("cofounder.db")
        (log.error if error else log.info)(message, **fields)
    else:
        typer.echo(message, err=error)


def _url(database_url: str | None) -> str:
    """The database's URL; exit 2 saying why for anything but PostgreSQL."""
    from cofounder_runtime.settings import postgresql_url

    url = database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if _json_lines():
        from urllib.parse import urlsplit

        from cofounder_runtime.logs import configure_logging
        from cofounder_runtime.secrets import secret_values

        try:
            password = urlsplit(url).password or ""
        except ValueError:
            password = ""
        secrets = [*secret_values(), *((url, password) if password else ())]
        configure_logging(level=os.environ.get("LOG_LEVEL", "INFO"), json=True, secrets=secrets)
    try:
        postgresql_url(url)
    except ValueError as refused:
        _say(f"error: {refused}", error=True)
        raise typer.Exit(2) from None
    return url


@app.command()
def upgrade(
    revision: Annotated[
        str, typer.Argument(metavar="[REVISION]", help="Target revision.")
    ] = "head",
    database_url: DatabaseUrl = None,
) -> None:
    """Apply the migrations up to REVISION (idempotent; one run at a time: a second waits
    for the first, then finds nothing to do)."""
    from cofounder_db.migrate import upgrade as run_upgrade

    url = _url(database_url)
    run_upgrade(url, revision)
    _say(f"database at {url.split('@')[-1]} is at {revision}", revision=revision)


@app.command()
def wait(
    revision: Annotated[
        str,
        typer.Argument(
            metavar="[REVISION]", help="The revision needed (head: this release's newest)."
        ),
    ] = "head",
    database_url: DatabaseUrl = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait before giving up (exit 1).")
    ] = 600.0,
    interval: Annotated[float, typer.Option(help="Seconds between two checks.")] = 2.0,
) -> None:
    """Wait until the database has REVISION's schema or a later one (a later release's
    migration); exit 1 after --timeout. An init container runs this before each service."""
    import asyncio

    from cofounder_db.migrate import wait_for_schema

    url = _url(database_url)
    try:
        state = asyncio.run(
            wait_for_schema(
                url,
                revision,
                timeout_s=timeout,
                interval_s=interval,
                on_wait=lambda why: _say(f"waiting for the schema: {why}", reason=why),
            )
        )
    except TimeoutError as exc:
        _say(f"error: the schema is not ready {exc}", error=True)
        raise typer.Exit(1) from None
    except ValueError as exc:
        _say(f"error: {exc}", error=True)
        raise typer.Exit(2) from None
    _say(f"schema ready: {state.reason}", needed=state.needed, current=list(state.current))
