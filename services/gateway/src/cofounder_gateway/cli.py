"""The gateway's CLI commands, mounted by ``cofounder`` through the ``cofounder.commands`` entry
point group: ``cofounder token mint`` and ``cofounder seed …`` (over the admin API)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from cofounder_gateway.auth import mint_token
from cofounder_gateway.settings import DEV_SECRET

token_app = typer.Typer(help="Bearer tokens for development.", no_args_is_help=True)
seed_app = typer.Typer(
    help="Seed users, projects, briefs and interviews through the admin API.", no_args_is_help=True
)

GatewayOpt = Annotated[
    str, typer.Option("--gateway-url", envvar="GATEWAY_URL", help="The gateway's base URL.")
]
AdminOpt = Annotated[
    str, typer.Option("--admin-token", envvar="ADMIN_TOKEN", help="The admin API token.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DEFAULT_GATEWAY = "http://127.0.0.1:8000"
DEFAULT_ADMIN = "dev-admin-token"


@token_app.command("mint")
def mint(
    user: Annotated[str, typer.Option("--user", help="The user id (the token's subject).")],
    ttl: Annotated[int, typer.Option(help="Seconds the token is valid.")] = 3600,
) -> None:
    """Print a bearer token for USER signed with $JWT_SECRET (the development secret if unset)."""
    typer.echo(mint_token(os.environ.get("JWT_SECRET", DEV_SECRET), user, ttl_s=ttl))


def _call(method: str, url: str, admin: str, body: dict[str, Any] | None = None) -> Any:
    try:
        response = httpx.request(
            method, url, json=body, timeout=30, headers={"Authorization": f"Bearer {admin}"}
        )
    except httpx.TransportError as exc:
        typer.echo(f"error: cannot reach the gateway at {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        typer.echo(f"error: {response.status_code} {response.text}", err=True)
        raise typer.Exit(1)
    return response.json()


def _emit(result: Any, as_json: bool, human: str) -> None:
    typer.echo(json.dumps(result) if as_json else human)


@seed_app.command("demo")
def demo(
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    admin_token: AdminOpt = DEFAULT_ADMIN,
    json_: JsonOpt = False,
) -> None:
    """A demo founder with a project, idea brief and interview, and a token for them."""
    result = _call("POST", f"{gateway_url}/v1/admin/demo", admin_token)
    _emit(
        result,
        json_,
        f"user {result['user_id']}\nproject {result['project_id']}\ntoken {result['token']}",
    )


@seed_app.command("user")
def user(
    email: Annotated[str, typer.Option()],
    tier: Annotated[str, typer.Option()] = "bootstrapper",
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    admin_token: AdminOpt = DEFAULT_ADMIN,
    json_: JsonOpt = False,
) -> None:
    """Create a user."""
    result = _call(
        "POST", f"{gateway_url}/v1/admin/users", admin_token, {"email": email, "tier": tier}
    )
    _emit(result, json_, result["id"])


@seed_app.command("project")
def project(
    owner: Annotated[str, typer.Option(help="The owner's user id.")],
    name: Annotated[str, typer.Option()],
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    admin_token: AdminOpt = DEFAULT_ADMIN,
    json_: JsonOpt = False,
) -> None:
    """Create a project."""
    result = _call(
        "POST", f"{gateway_url}/v1/admin/projects", admin_token, {"owner_id": owner, "name": name}
    )
    _emit(result, json_, result["id"])


@seed_app.command("brief")
def brief(
    project_id: str,
    file: Annotated[Path, typer.Argument(help="A JSON object.")],
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    admin_token: AdminOpt = DEFAULT_ADMIN,
    json_: JsonOpt = False,
) -> None:
    """Set a project's idea brief from a JSON file."""
    content = json.loads(file.read_text())
    result = _call(
        "PUT",
        f"{gateway_url}/v1/admin/projects/{project_id}/idea-brief",
        admin_token,
        {"content": content},
    )
    _emit(result, json_, result["id"])


@seed_app.command("interview")
def interview(
    project_id: str,
    file: Annotated[Path, typer.Argument(help='{"questions": [...], "answers": {}}')],
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    admin_token: AdminOpt = DEFAULT_ADMIN,
    json_: JsonOpt = False,
) -> None:
    """Add an understanding session (questions and answers) from a JSON file."""
    result = _call(
        "POST",
        f"{gateway_url}/v1/admin/projects/{project_id}/understanding-sessions",
        admin_token,
        json.loads(file.read_text()),
    )
    _emit(result, json_, result["id"])
