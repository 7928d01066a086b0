"""The README's run command on a fresh checkout with nothing configured: ``cofounder dev --once``
starts Redis, the scripted model and every service, runs the demo build to its end and prints a
preview URL that answered HTTP 200."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cofounder_testing.waiting import startup_deadline_s

pytestmark = pytest.mark.e2e

CONFIGURATION = (
    "REDIS_URL",
    "DATABASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "E2B_API_KEY",
)


def startup() -> list[str]:
    """``cofounder dev`` waits for Redis and the gateway as long as the harness would."""
    return ["--startup-timeout", str(startup_deadline_s())]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_dev_once_builds_the_demo_app_with_nothing_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURATION}
    result = subprocess.run(
        [sys.executable, "-m", "cofounder_cli", "dev", "--once", *startup()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=startup_deadline_s() + 120,  # start-up, then the demo build (about a minute)
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
    assert _leftovers(tmp_path / ".cofounder" / "dev") == []  # no service, sandbox or pasta


def _leftovers(workdir: Path) -> list[str]:
    """Processes that still belong to a ``cofounder dev`` run: its services (their environment
    names its folder), its sandboxes' bubblewrap and pasta (their command lines do)."""
    mark = str(workdir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and (mark in cmdline or mark in environ):
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200])
    return found


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_ctrl_c_stops_everything_dev_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURATION}
    dev = subprocess.Popen(
        [sys.executable, "-m", "cofounder_cli", "dev", *startup()],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert dev.stdout is not None
        for line in dev.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line and line.startswith("running"):
                break
        else:
            raise AssertionError("".join(lines))
        redis = re.search(r"redis redis://127\.0\.0\.1:(\d+)/", "".join(lines))
        preview = re.search(r"preview: http://127\.0\.0\.1:(\d+)", "".join(lines))
        assert redis, "".join(lines)
        assert preview, "".join(lines)
        dev.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = dev.communicate(timeout=120)
        lines.append(rest)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
    assert dev.returncode == 0, "".join(lines)
    assert "stopping" in "".join(lines)
    assert _leftovers(tmp_path / ".cofounder" / "dev") == []
    for port in (int(redis.group(1)), int(preview.group(1))):
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), 2),
        ):
            pass
