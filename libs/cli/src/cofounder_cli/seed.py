"""``cofounder seed demo|user|project|brief|interview``: seed through the gateway's admin API
(``cofounder_client.AdminClient``), with the admin token (``--admin-token`` or ``$ADMIN_TOKEN``;
the development one by default).

``seed demo --export`` prints shell ``export`` lines (values shell-quoted) for
``eval "$(cofounder seed demo --export)"``: ``TOKEN``, ``PROJECT`` and ``USER_ID`` for curl,
``COFOUNDER_TOKEN`` and ``COFOUNDER_GATEWAY_URL`` for the other ``cofounder`` commands. (Not
``USER``: the shell's login name.) Errors: ``api.py``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cofounder_cli.api import Gateway, admin_command

if TYPE_CHECKING:
    from cofounder_client import AdminClient

    Admin = Gateway[AdminClient]

__all__ = ["app", "export_lines"]

app = typer.Typer(
    help="Seed users, projects, briefs and interviews through the admin API.", no_args_is_help=True
)


def export_lines(values: dict[str, str]) -> str:
    """``export NAME=value`` lines, each value quoted for a POSIX shell."""
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in values.items())


def _json_file(file: Path, as_json: bool) -> dict[str, Any]:
    """The JSON object in ``file``; an error (exit 1) when it holds none."""
    try:
        found = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        found, detail = None, f"cannot read {file} as JSON: {exc}"
    else:
        detail = f"{file} does not hold a JSON object"
    if isinstance(found, dict):
        return found
    if as_json:
        problem = {"type": "invalid_file", "title": "Invalid file", "status": None}
        typer.echo(json.dumps({**problem, "detail": detail}), err=True)
    else:
        typer.echo(f"error: {detail}", err=True)
    raise typer.Exit(1)


@admin_command(app, "demo")
def demo(
    gw: Admin,
    export: Annotated[
        bool,
        typer.Option(
            "--export",
            help='Print export lines for the shell: eval "$(cofounder seed demo --export)" sets '
            "TOKEN, PROJECT, USER_ID, COFOUNDER_TOKEN and COFOUNDER_GATEWAY_URL.",
        ),
    ] = False,
) -> None:
    """A demo founder with a project, idea brief and interview, and a token for them."""
    seeded = gw.client.seed_demo()
    if export and not gw.as_json:
        values = {
            "TOKEN": seeded.token,
            "PROJECT": seeded.project_id,
            "USER_ID": seeded.user_id,
            "COFOUNDER_TOKEN": seeded.token,
            "COFOUNDER_GATEWAY_URL": gw.url,
        }
        typer.echo(export_lines(values))
        return
    human = f"user {seeded.user_id}\nproject {seeded.project_id}\ntoken {seeded.token}"
    gw.emit(seeded.raw, human)


@admin_command(app, "user")
def user(
    gw: Admin,
    email: Annotated[str, typer.Option(metavar="EMAIL", help="The user's e-mail address.")],
    tier: Annotated[str, typer.Option(metavar="TIER", help="Their plan.")] = "bootstrapper",
) -> None:
    """Create a user; prints their id."""
    gw.created(gw.client.create_user(email, tier=tier))


@admin_command(app, "project")
def project(
    gw: Admin,
    owner: Annotated[str, typer.Option(metavar="USER_ID", help="The owner's user id.")],
    name: Annotated[str, typer.Option(metavar="NAME", help="The project's name.")],
) -> None:
    """Create a project; prints its id."""
    gw.created(gw.client.create_project(owner, name))


@admin_command(app, "brief")
def brief(
    gw: Admin,
    project_id: Annotated[str, typer.Argument(metavar="PROJECT_ID", help="The project's id.")],
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A JSON object.")],
) -> None:
    """Set a project's idea brief from a JSON file."""
    gw.created(gw.client.put_idea_brief(project_id, _json_file(file, gw.as_json)))


@admin_command(app, "interview")
def interview(
    gw: Admin,
    project_id: Annotated[str, typer.Argument(metavar="PROJECT_ID", help="The project's id.")],
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help='A JSON object: {"questions": [{"id", "text"}...], "answers": {}}'
        ),
    ],
) -> None:
    """Add an understanding session (questions and answers) from a JSON file."""
    session = _json_file(file, gw.as_json)
    gw.created(
        gw.client.create_interview(project_id, session.get("questions", []), session.get("answers"))
    )
