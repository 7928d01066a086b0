"""``cofounder builds ...`` against the gateway as a real process: create, get, list, cancel,
follow, and the errors a user sees (with ``--json``: the problem object, on stderr)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from cofounder_cli.main import app

pytestmark = pytest.mark.e2e


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def cofounder(*args: str, ok: bool = True) -> Done:
    """The CLI in-process (the gateway it talks to is a real process)."""
    result = CliRunner().invoke(app, list(args))
    done = Done(result.exit_code, result.stdout, result.stderr)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def test_a_founder_s_builds_from_the_command_line(gateway_process: str) -> None:
    url = ["--gateway-url", gateway_process]
    demo = json.loads(cofounder("seed", "demo", "--json", *url).stdout)
    auth = ["--token", demo["token"], *url]

    created = json.loads(
        cofounder(
            "builds",
            "create",
            "--project",
            demo["project_id"],
            "--goal",
            "A CLI build",
            "--json",
            *auth,
        ).stdout
    )
    assert created["status"] == "queued"
    assert created["goal"] == "A CLI build"

    shown = cofounder("builds", "get", created["id"], *auth).stdout
    assert f"build    {created['id']}" in shown
    assert "status   queued" in shown

    listed = json.loads(cofounder("builds", "list", "--json", *auth).stdout)
    assert [b["id"] for b in listed["items"]] == [created["id"]]
    human = cofounder("builds", "list", "--status", "queued", *auth).stdout
    assert human.startswith(created["id"])

    cancelled = cofounder("builds", "cancel", created["id"], *auth).stdout.strip()
    assert cancelled == f"build {created['id']} cancelled"

    followed = cofounder("builds", "follow", created["id"], "--json", *auth, ok=False)
    assert followed.returncode == 1  # it did not complete
    seen = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [e["status"] for e in seen if e["event"] == "build.status_changed"][-1] == "cancelled"


def test_errors_are_clear_and_exit_non_zero(gateway_process: str) -> None:
    url = ["--gateway-url", gateway_process]
    demo = json.loads(cofounder("seed", "demo", "--json", *url).stdout)
    missing = cofounder(
        "builds", "get", str(uuid.uuid4()), "--token", demo["token"], *url, ok=False
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: 404")
    bad_token = cofounder("builds", "list", "--token", "not-a-token", *url, ok=False)
    assert bad_token.returncode == 1
    assert "error: 401" in bad_token.stderr
    unreachable = cofounder(
        "builds", "list", "--token", "x", "--gateway-url", "http://127.0.0.1:1", ok=False
    )
    assert unreachable.returncode == 1
    assert "cannot reach the gateway" in unreachable.stderr
    followed = cofounder(
        "builds", "follow", str(uuid.uuid4()), "--token", demo["token"], *url, ok=False
    )
    assert followed.returncode == 1
    assert "error: 404" in followed.stderr


def test_json_errors_are_the_gateway_s_problem_objects(gateway_process: str) -> None:
    url = ["--gateway-url", gateway_process]
    demo = json.loads(cofounder("seed", "demo", "--json", *url).stdout)
    auth = ["--token", demo["token"], *url]
    missing = str(uuid.uuid4())
    done = cofounder("builds", "get", missing, "--json", *auth, ok=False)
    assert done.returncode == 1
    assert done.stdout == ""
    problem = json.loads(done.stderr)
    assert problem == {
        "type": "build_not_found",
        "title": "Not found",
        "status": 404,
        "detail": f"no build {missing}",
    }
    long_goal = cofounder(
        "builds",
        "create",
        "--project",
        demo["project_id"],
        "--goal",
        "x" * 2_001,
        "--json",
        *auth,
        ok=False,
    )
    invalid = json.loads(long_goal.stderr)
    assert (invalid["status"], invalid["type"]) == (422, "invalid_request")
    assert [e["field"] for e in invalid["errors"]] == ["goal"]
    bad_token = cofounder("builds", "list", "--json", "--token", "nope", *url, ok=False)
    assert json.loads(bad_token.stderr)["type"] == "invalid_token"


def test_quiet_create_prints_only_the_id(gateway_process: str) -> None:
    url = ["--gateway-url", gateway_process]
    demo = json.loads(cofounder("seed", "demo", "--json", *url).stdout)
    auth = ["--token", demo["token"], *url]
    build_id = cofounder(
        "builds", "create", "--project", demo["project_id"], "-q", *auth
    ).stdout.strip()
    assert str(uuid.UUID(build_id)) == build_id
    assert (
        json.loads(cofounder("builds", "get", build_id, "--json", *auth).stdout)["id"] == build_id
    )
