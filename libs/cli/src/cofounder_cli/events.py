"""``cofounder events export``: the JSON Schemas and AsyncAPI document of every event."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cofounder_contracts import schema

app = typer.Typer(help="The event catalog.", no_args_is_help=True)


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="Output folder.")] = Path("docs/events"),
) -> None:
    """Write docs/events/schemas/<type>.json and docs/events/asyncapi.json."""
    for path in schema.export(out):
        typer.echo(str(path))
