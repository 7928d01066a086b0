"""The gateway's CLI command, mounted by ``cofounder`` through the ``cofounder.commands`` entry
point group: ``cofounder token mint`` (it signs with the gateway's key). Seeding goes over the
admin API like any client: ``cofounder seed`` is ``cofounder_cli.seed``."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cofounder_gateway.auth import mint_token
from cofounder_gateway.settings import DEV_SECRET

token_app = typer.Typer(help="Bearer tokens for development.", no_args_is_help=True)


@token_app.command("mint")
def mint(
    user: Annotated[
        str, typer.Option("--user", metavar="USER_ID", help="The user id (the token's subject).")
    ],
    ttl: Annotated[int, typer.Option(metavar="SECONDS", help="Seconds the token is valid.")] = 3600,
) -> None:
    """Print a bearer token for USER signed with $JWT_SECRET (the development secret if unset)."""
    typer.echo(mint_token(os.environ.get("JWT_SECRET", DEV_SECRET), user, ttl_s=ttl))
