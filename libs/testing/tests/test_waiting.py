"""Start-up waits: one generous deadline, over at once when the process exits, and an error that
carries its exit code and the end of its log."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cofounder_testing import servers
from cofounder_testing.waiting import (
    NotStarted,
    Watched,
    startup_deadline_s,
    until_started,
    wait_started,
)


def test_the_deadline_is_generous_by_default_and_set_by_one_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TEST_STARTUP_DEADLINE_S", raising=False)
    assert startup_deadline_s() == 120
    monkeypatch.setenv("TEST_STARTUP_DEADLINE_S", "300")
    assert startup_deadline_s() == 300
    for bad in ("soon", "0", "-5", "nan"):
        monkeypatch.setenv("TEST_STARTUP_DEADLINE_S", bad)
        with pytest.raises(ValueError, match="TEST_STARTUP_DEADLINE_S"):
            startup_deadline_s()


def _start(script: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT
        )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_process_that_exits_ends_the_wait_at_once_with_its_code_and_log(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_STARTUP_DEADLINE_S", "120")
    log = tmp_path / "svc.log"
    script = "import sys; print('cannot bind: address in use', file=sys.stderr); sys.exit(3)"
    procs.append(_start(script, log))
    began = time.monotonic()
    with pytest.raises(NotStarted) as failed:
        wait_started(lambda: False, what="the service", watch=[Watched("svc", procs[0], log)])
    assert time.monotonic() - began < 30  # not the 120 s deadline
    assert "svc exited while waiting for the service" in str(failed.value)
    assert "exited with code 3" in str(failed.value)
    assert "cannot bind: address in use" in str(failed.value)  # its stderr, from its log


async def test_the_deadline_failure_says_which_variable_and_shows_the_log(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_STARTUP_DEADLINE_S", "0.5")
    log = tmp_path / "slow.log"
    procs.append(_start("import time; print('still importing', flush=True); time.sleep(60)", log))
    with pytest.raises(NotStarted) as failed:
        await until_started(
            lambda: False, what="the slow one", watch=[Watched("slow", procs[0], log)]
        )
    message = str(failed.value)
    assert "not ready after 0.5 s (TEST_STARTUP_DEADLINE_S" in message
    assert f"still running (pid {procs[0].pid})" in message
    assert "still importing" in message


async def test_a_ready_process_ends_the_wait(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "ok.log"
    procs.append(_start("import time; print('listening', flush=True); time.sleep(60)", log))

    async def ready() -> bool:
        return "listening" in log.read_text()

    await until_started(ready, what="the server", watch=[Watched("ok", procs[0], log)])


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_a_throwaway_redis_that_cannot_start_reports_its_exit_code_and_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its output used to go to /dev/null: all the harness could say was "did not come up".
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: bad config directive' >&2\nexit 7\n")
    fake.chmod(0o755)
    monkeypatch.delenv("TEST_REDIS_URL", raising=False)
    monkeypatch.setattr(servers, "redis_server_binary", lambda: str(fake))
    with pytest.raises(servers.ServerUnavailable) as failed, servers.redis_server():
        pass
    assert "exited with code 7" in str(failed.value)
    assert "FATAL: bad config directive" in str(failed.value)
