"""A tool call longer than a minute: ``cofounder dev --once`` and ``cofounder builds follow``
(a second client of the same build) stay connected through the quiet stretch, or reconnect, and
both end with exit 0; the gateway's log has no traceback. Before, redis-py 8's 5 s socket
timeout cut every live feed after 5 s without an event."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cofounder_testing.waiting import startup_deadline_s

pytestmark = pytest.mark.e2e

CONFIGURATION = ("REDIS_URL", "DATABASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
LONG_S = 65

TRANSCRIPT = f"""\
name: long-tool-call
turns:
  - text: "A long install."
    tools:
      - name: bash
        input: {{command: "sleep {LONG_S} && echo installed"}}
  - tools:
      - name: finish
        input: {{summary: "Installed after a long wait."}}
"""


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_a_tool_call_longer_than_a_minute_keeps_both_followers(tmp_path: Path) -> None:
    (tmp_path / "long.yaml").write_text(TRANSCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURATION}
    env["SCRIPTED_TRANSCRIPT"] = str(tmp_path / "long.yaml")
    deadline = startup_deadline_s()
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cofounder_cli",
            "dev",
            "--once",
            "--startup-timeout",
            str(deadline),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    started = threading.Event()
    found: dict[str, str] = {}

    def read() -> None:
        assert dev.stdout is not None
        for line in dev.stdout:
            lines.append(line)
            if m := re.search(r"pipeline up: gateway (\S+),", line):
                found["gateway"] = m.group(1)
            if m := re.search(r"demo founder (\S+), project", line):
                found["user"] = m.group(1)
            if m := re.search(r"build (\S+) queued", line):
                found["build"] = m.group(1)
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Start-up: every service up (dev's own wait, the same deadline), the demo founder
        # seeded, the build queued. Over at once when dev exits; its output says why.
        until = time.monotonic() + deadline + 30
        while not started.wait(0.2):
            if dev.poll() is not None or time.monotonic() > until:
                if dev.poll() is not None:
                    reader.join(timeout=10)  # its last lines
                raise AssertionError(
                    f"cofounder dev queued no build (exit code {dev.poll()}; "
                    f"TEST_STARTUP_DEADLINE_S={deadline:g}); its output ends:\n"
                    + "".join(lines)[-3000:]
                )
        token = subprocess.run(
            [sys.executable, "-m", "cofounder_cli", "token", "mint", "--user", found["user"]],
            env=env, capture_output=True, text=True, check=True, timeout=deadline,
        ).stdout.strip().split()[-1]  # fmt: skip
        follow = subprocess.run(
            [sys.executable, "-m", "cofounder_cli", "builds", "follow", found["build"],
             "--token", token, "--gateway-url", found["gateway"]],
            env=env, capture_output=True, text=True, timeout=LONG_S + 120, check=False,
        )  # fmt: skip
        assert dev.wait(timeout=180) == 0, "".join(lines)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
        reader.join(timeout=10)
        if dev.stdout is not None:
            dev.stdout.close()
    output = "".join(lines)
    assert follow.returncode == 0, follow.stdout + follow.stderr
    assert "completed: version 1" in follow.stdout
    assert "completed: version 1" in output
    assert "installed" in output or "bash" in output
    gateway_log = (tmp_path / ".cofounder" / "dev" / "logs" / "gateway.log").read_text()
    assert "Traceback" not in gateway_log
    assert "sse_read_failed" not in gateway_log
