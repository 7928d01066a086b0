"""``cofounder db upgrade``: migrate the system of record."""

from __future__ import annotations

import os
from typing import Annotated, Final

import typer

#: ``cofounder_runtime.settings.DEFAULT_DATABASE_URL`` (a test keeps the two equal), written out
#: here because the help shows it and importing ``cofounder_runtime`` takes most of a second.
DEFAULT_DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/cofounder"

app = typer.Typer(help="The database (migrations).", no_args_is_help=True)


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: Annotated[
        str | None,
        typer.Option(help=f"Default: $DATABASE_URL, else {DEFAULT_DATABASE_URL}."),
    ] = None,
) -> None:
    """Apply the migrations up to REVISION (idempotent)."""
    from cofounder_db.migrate import upgrade as run_upgrade
    from cofounder_runtime.settings import postgresql_url

    url = database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    try:
        postgresql_url(url)
    except ValueError as refused:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(2) from None
    run_upgrade(url, revision)
    typer.echo(f"database at {url.split('@')[-1]} is at {revision}")
