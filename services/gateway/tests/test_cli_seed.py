"""``cofounder seed`` and ``cofounder token mint`` against the gateway as a real process; ``seed
demo --export`` in a shell, as the README uses it."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from cofounder_testing.waiting import startup_deadline_s

pytestmark = pytest.mark.e2e


def cofounder(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cofounder_cli", *args],
        capture_output=True,
        text=True,
        timeout=startup_deadline_s(),  # a cold start on a loaded machine
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_seed_demo_then_a_minted_token_starts_a_build(gateway_process: str) -> None:
    demo = json.loads(cofounder("seed", "demo", "--json", "--gateway-url", gateway_process))
    token = cofounder("token", "mint", "--user", demo["user_id"])
    auth = {"Authorization": f"Bearer {token}"}
    started = httpx.post(
        f"{gateway_process}/v1/projects/{demo['project_id']}/builds",
        json={},
        headers=auth,
        timeout=10,
    )
    assert started.status_code == 202, started.text
    listed = httpx.get(f"{gateway_process}/v1/builds", headers=auth, timeout=10).json()
    assert [b["id"] for b in listed["items"]] == [started.json()["id"]]


def test_seeding_a_user_and_project_step_by_step(gateway_process: str, tmp_path: object) -> None:
    user = cofounder(
        "seed",
        "user",
        "--email",
        "step@example.com",
        "--tier",
        "pro",
        "--gateway-url",
        gateway_process,
    )
    project = cofounder(
        "seed", "project", "--owner", user, "--name", "Steps", "--gateway-url", gateway_process
    )
    assert len(user) == len(project) == 36


def test_seed_reports_a_clear_error_when_the_gateway_is_down() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cofounder_cli",
            "seed",
            "demo",
            "--gateway-url",
            "http://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=startup_deadline_s(),  # a cold start on a loaded machine
        check=False,
    )
    assert done.returncode == 1
    assert "cannot reach the gateway" in done.stderr


def test_seed_demo_export_sets_the_shell_up_for_curl_and_the_cli(gateway_process: str) -> None:
    script = (
        'eval "$("$PYTHON" -m cofounder_cli seed demo --export --gateway-url "$GW")"\n'
        "curl -sf -o /dev/null -w '%{http_code}' -X POST -H \"Authorization: Bearer $TOKEN\" "
        "-H 'content-type: application/json' -d '{}' \"$GW/v1/projects/$PROJECT/builds\"\n"
        'echo\n"$PYTHON" -m cofounder_cli builds list --json\n'
        'echo "$USER_ID"\n'
    )
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=startup_deadline_s() * 3,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "GW": gateway_process},
    )
    assert done.returncode == 0, done.stderr
    status, listed, user_id = done.stdout.strip().splitlines()
    assert status == "202"
    assert len(json.loads(listed)["items"]) == 1  # COFOUNDER_TOKEN and _GATEWAY_URL were set
    assert len(user_id) == 36
