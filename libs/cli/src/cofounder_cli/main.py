"""The ``cofounder`` command: one entry point whose subcommands each area of the system adds.

Subcommand groups live in their own modules (``serve``, ``dlq``, ``events``) and are mounted here.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from cofounder_cli import budget, builds, config, db, dev, dlq, events, serve, snapshots

app = typer.Typer(
    name="cofounder",
    help="Cofounder build pipeline: run services and operate the event streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(budget.app, name="budget")
app.add_typer(builds.app, name="builds")
app.add_typer(config.app, name="config")
app.add_typer(db.app, name="db")
app.add_typer(dlq.app, name="dlq")
app.add_typer(events.app, name="events")
app.add_typer(snapshots.app, name="snapshots")
app.command("serve")(serve.serve)
app.command("dev")(dev.dev)

#: Services add command groups under this entry-point group (the gateway: token, seed).
COMMAND_ENTRY_POINTS = "cofounder.commands"
for _ep in entry_points(group=COMMAND_ENTRY_POINTS):
    app.add_typer(_ep.load(), name=_ep.name)


def main() -> None:
    """Console-script entry point."""
    app()
