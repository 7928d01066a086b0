"""``cofounder events export``: the JSON Schemas, the AsyncAPI document and the catalog's page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The event catalog.", no_args_is_help=True)


@app.command()
def export(
    out: Annotated[Path, typer.Argument(metavar="[FOLDER]", help="Output folder.")] = Path(
        "docs/events"
    ),
) -> None:
    """Write schemas/<type>.json, asyncapi.json and README.md (default: into docs/events)."""
    from cofounder_contracts import schema

    for path in schema.export(out):
        typer.echo(str(path))
