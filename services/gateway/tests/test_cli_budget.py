"""``cofounder budget show|top-up|tier`` against the gateway as a real process."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cofounder_cli.main import app

pytestmark = pytest.mark.e2e
ADMIN = ["--admin-token", "dev-admin-token"]


def cofounder(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout + result.stderr


def test_budget_show_top_up_and_tier_from_the_command_line(gateway_process: str) -> None:
    url = ["--gateway-url", gateway_process]
    demo = json.loads(cofounder("seed", "demo", "--json", *url))
    user = demo["user_id"]

    mine = cofounder("budget", "show", "--token", demo["token"], *url)
    assert f"user      {user} (bootstrapper)" in mine
    assert "gate      open" in mine
    assert "spent 0.0000 of" in mine

    topped = cofounder("budget", "top-up", user, "2.50", "--note", "cli", *ADMIN, *url)
    assert f"topped up {user} by 2.50" in topped
    as_json = json.loads(cofounder("budget", "top-up", user, "1", "--json", *ADMIN, *url))
    assert as_json["amount_micros"] == 1_000_000

    assert f"{user}: bootstrapper -> pro" in cofounder("budget", "tier", user, "pro", *ADMIN, *url)
    shown = json.loads(cofounder("budget", "show", "--user", user, "--json", *ADMIN, *url))
    assert shown["today"]["tier"] == "pro"
    assert shown["days"] == []

    # What a user sees when they get it wrong.
    assert "not an amount" in cofounder("budget", "top-up", user, "lots", *ADMIN, *url, code=2)
    assert "more than zero" in cofounder("budget", "top-up", user, "0", *ADMIN, *url, code=2)
    unknown = cofounder("budget", "tier", user, "platinum", *ADMIN, *url, code=1)
    assert "tier must be one of" in unknown
    assert "401" in cofounder("budget", "tier", user, "pro", "--admin-token", "nope", *url, code=1)
    assert "--token" in cofounder("budget", "show", *url, code=2)
