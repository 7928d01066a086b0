"""The README's run command on a fresh checkout with nothing configured: ``cofounder dev --once``
starts Redis, the scripted model and every service, runs the demo build to its end and prints a
preview URL that answered HTTP 200."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CONFIGURATION = (
    "REDIS_URL",
    "DATABASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "E2B_API_KEY",
)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_dev_once_builds_the_demo_app_with_nothing_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURATION}
    result = subprocess.run(
        [sys.executable, "-m", "cofounder_cli", "dev", "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    found = re.search(r"preview: (http://127\.0\.0\.1:(\d+)) \(HTTP 200\)", output)
    assert found, output
    assert "status: running" in output
    # Live progress: tokens and the day's budget on every iteration.
    assert re.search(
        r"iteration \d+: .*tokens [\d,]+ in / [\d,]+ out; budget [\d.,]+ of [\d.,]+ today", output
    ), output
    assert "completed: version 1" in output
    assert re.search(r"snapshot v\d+: \d+ files", output), output
    # All it made is under the working directory's .cofounder/dev; nothing is left running.
    assert (tmp_path / ".cofounder" / "dev" / "cofounder.db").exists()
    assert list((tmp_path / ".cofounder" / "dev" / "sandboxes").glob("*/project/app.py"))
    logs = tmp_path / ".cofounder" / "dev" / "logs"
    assert {p.stem for p in logs.glob("*.log")} >= {
        "gateway",
        "context-assembler",
        "agent-runner",
        "redis",
        "scripted-model",
        "snapshot",
        "budget",
    }
    assert list((tmp_path / ".cofounder" / "dev" / "snapshots").rglob("*.json"))
    ledger = sqlite3.connect(tmp_path / ".cofounder" / "dev" / "cofounder.db")
    try:
        metered = ledger.execute("select count(*), sum(cost_micros) from budget_ledger").fetchone()
    finally:
        ledger.close()
    assert metered[0] >= 8  # every model call of the demo build was metered
    assert metered[1] > 0
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", int(found.group(2))), 2),
    ):
        pass  # the demo app's server was stopped with the rest
