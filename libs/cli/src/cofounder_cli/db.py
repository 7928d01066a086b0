"""``cofounder db upgrade``: migrate the system of record."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cofounder_db.migrate import upgrade as run_upgrade

app = typer.Typer(help="The database (migrations).", no_args_is_help=True)

DEFAULT_URL = "sqlite+aiosqlite:///.cofounder/cofounder.db"


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: Annotated[
        str | None, typer.Option(help="Default: $DATABASE_URL, else the embedded SQLite file.")
    ] = None,
) -> None:
    """Apply the migrations up to REVISION (idempotent)."""
    url = database_url or os.environ.get("DATABASE_URL") or DEFAULT_URL
    if url.startswith("sqlite") and ".cofounder/" in url:
        os.makedirs(".cofounder", exist_ok=True)
    run_upgrade(url, revision)
    typer.echo(f"database at {url.split('@')[-1]} is at {revision}")
