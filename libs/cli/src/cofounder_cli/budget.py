"""``cofounder budget show|top-up|tier``: daily budgets and usage, on the gateway's REST API.

``show`` reads your own usage with your token (``$COFOUNDER_TOKEN``), or any user's with
``--user`` and the admin token (``$ADMIN_TOKEN``); ``--build`` shows one build's usage by model.
``top-up`` and ``tier`` are admin commands. Amounts are in units of the plan's currency
(``5`` or ``2.50``); the API counts micros.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cofounder_cli.api import (
    DEFAULT_ADMIN_TOKEN,
    DEFAULT_GATEWAY,
    AdminOpt,
    Gateway,
    GatewayOpt,
    JsonOpt,
    admin_client,
    admin_command,
    emit,
    founder_client,
    shown_errors,
)
from cofounder_cli.money import MICROS, money

if TYPE_CHECKING:
    from cofounder_client import AdminClient

app = typer.Typer(help="Daily budgets, usage, top-ups and plans.", no_args_is_help=True)

UserTokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="COFOUNDER_TOKEN", metavar="TOKEN", help="Your bearer token."),
]
DEFAULT_ADMIN = DEFAULT_ADMIN_TOKEN


def _micros(amount: str) -> int:
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise typer.BadParameter(f"not an amount: {amount!r} (say 5 or 2.50)") from None
    if not value.is_finite():  # NaN, Infinity: Decimal takes them, no budget does
        raise typer.BadParameter(f"not an amount: {amount!r} (say 5 or 2.50)")
    micros = int(value * MICROS)
    if micros <= 0:  # zero, negative, or below a millionth of the currency
        raise typer.BadParameter("the amount must be more than zero (0.000001 at least)")
    return micros


def _usage_text(usage: dict[str, Any]) -> str:
    today = usage["today"]
    lines = [
        f"user      {usage['user_id']} ({today['tier']})",
        f"today     {today['day']}: spent {money(today['spent_micros'])} of "
        f"{money(today['budget_micros'])} ({money(today['remaining_micros'])} left)",
        f"gate      {today['gate']}"
        + (f" until {today['resets_at']}" if today["gate"] == "closed" else ""),
    ]
    if today["top_ups_micros"]:
        lines.append(f"top-ups   {money(today['top_ups_micros'])} today")
    if usage["days"]:
        lines.append("")
        lines.append(f"{'day':<12}{'spent':>12}{'calls':>8}{'tokens in':>14}{'tokens out':>12}")
        lines.extend(
            f"{d['day']:<12}{money(d['cost_micros']):>12}{d['calls']:>8}"
            f"{d['input_tokens']:>14,}{d['output_tokens']:>12,}"
            for d in usage["days"]
        )
    return "\n".join(lines)


def _build_text(usage: dict[str, Any]) -> str:
    lines = [
        f"build     {usage['build_id']}",
        f"spent     {money(usage['cost_micros'])} in {usage['calls']} model calls",
    ]
    lines.extend(
        f"  {m['model']:<24}{money(m['cost_micros']):>12}{m['calls']:>6} calls"
        for m in usage["by_model"]
    )
    return "\n".join(lines)


@app.command()
def show(
    token: UserTokenOpt = None,
    user: Annotated[
        str | None, typer.Option("--user", metavar="USER_ID", help="Any user (admin).")
    ] = None,
    build: Annotated[
        str | None, typer.Option("--build", metavar="BUILD_ID", help="One build's usage.")
    ] = None,
    days: Annotated[
        int, typer.Option(min=1, max=92, metavar="N", help="Days back, today included.")
    ] = 7,
    admin_token: AdminOpt = DEFAULT_ADMIN,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """Today's budget and spend, the last days' usage (or one build's, by model)."""
    if user is None and token is None:
        raise typer.BadParameter("give --token (your usage) or --user (admin)")
    with shown_errors(json_):
        if user is not None:
            with admin_client(gateway_url, admin_token) as admin:
                found = (
                    admin.user_build_usage(user, build)
                    if build
                    else admin.user_usage(user, days=days)
                )
        else:
            assert token is not None
            with founder_client(gateway_url, token) as client:
                found = client.build_usage(build) if build else client.usage(days=days)
    usage = found.raw
    emit(usage, json_, _build_text(usage) if build else _usage_text(usage))


@admin_command(app, "top-up")
def top_up(
    gw: Gateway[AdminClient],
    user: Annotated[str, typer.Argument(metavar="USER_ID", help="The user id.")],
    amount: Annotated[
        str, typer.Argument(metavar="AMOUNT", help="In units of the currency, e.g. 5 or 2.50.")
    ],
    note: Annotated[str, typer.Option(metavar="TEXT", help="Why (kept with the top-up).")] = "",
) -> None:
    """Grant USER extra budget, usable at once; their sleeping builds wake."""
    done = gw.client.top_up(user, _micros(amount), note=note)
    gw.emit(done.raw, f"topped up {user} by {money(done.amount_micros)} (top-up {done.id})")


@admin_command(app)
def tier(
    gw: Gateway[AdminClient],
    user: Annotated[str, typer.Argument(metavar="USER_ID", help="The user id.")],
    new_tier: Annotated[str, typer.Argument(metavar="TIER", help="One of the configured plans.")],
) -> None:
    """Move USER to another plan (an upgrade wakes their sleeping builds)."""
    done = gw.client.set_tier(user, new_tier)
    gw.emit(done.raw, f"{user}: {done.previous_tier} -> {done.tier}")
