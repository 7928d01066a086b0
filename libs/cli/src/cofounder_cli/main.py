"""The ``cofounder`` command: one entry point whose subcommands each area of the system adds.

Subcommand groups live in their own modules (``serve``, ``dlq``, ``events``) and are mounted here.
Importing them is cheap (``cofounder --help`` stays fast): each imports what its commands need
when they run. Groups other packages add (``cofounder.commands`` entry points) are loaded only
when used (``plugins``).
"""

from __future__ import annotations

import typer

from cofounder_cli import budget, builds, config, db, dev, dlq, events, seed, serve, snapshots
from cofounder_cli.plugins import COMMAND_ENTRY_POINTS, CofounderGroup

__all__ = ["COMMAND_ENTRY_POINTS", "app", "main"]

app = typer.Typer(
    name="cofounder",
    cls=CofounderGroup,
    help="Cofounder build pipeline: run services and operate the event streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: no type placeholders (<bool>, <str>) beside the options, no markup.
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
)
app.add_typer(budget.app, name="budget")
app.add_typer(builds.app, name="builds")
app.add_typer(config.app, name="config")
app.add_typer(db.app, name="db")
app.add_typer(dlq.app, name="dlq")
app.add_typer(events.app, name="events")
app.add_typer(seed.app, name="seed")
app.add_typer(snapshots.app, name="snapshots")
app.command("serve")(serve.serve)
app.command("dev")(dev.dev)


def main() -> None:
    """Console-script entry point."""
    app()
