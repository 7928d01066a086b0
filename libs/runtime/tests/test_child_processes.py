"""The process supervisor: output always kept, readiness waited for (never slept for), a child
that dies explained by its exit code and what it wrote last, SIGTERM then SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cofounder_runtime.processes import (
    Child,
    Children,
    ProcessFailed,
    log_says,
    start,
    until_ready,
    wait_ready,
)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


#: Says it is up (on stdout), then runs until SIGTERM, after which it says goodbye and exits 0.
_SERVER = """
import signal, sys, time
def bye(*_):
    print("bye", file=sys.stderr, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("listening", flush=True)
while True:
    time.sleep(1)
"""
#: Ignores SIGTERM: only SIGKILL ends it.
_STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("listening", flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    running = Children(tmp_path / "logs")
    yield running
    running.kill_all()


def test_a_child_that_dies_early_ends_the_wait_at_once_with_its_code_and_stderr(
    children: Children,
) -> None:
    child = children.start(
        "svc", _python("import sys; print('cannot bind: address in use', file=sys.stderr); exit(3)")
    )
    began = time.monotonic()
    with pytest.raises(ProcessFailed) as failed:
        wait_ready(lambda: False, what="the service", timeout_s=60, watch=[child])
    assert time.monotonic() - began < 30
    message = str(failed.value)
    assert "svc exited while waiting for the service" in message
    assert "exited with code 3" in message
    assert "cannot bind: address in use" in message  # stderr is in the log
    assert child.returncode == 3
    with pytest.raises(ProcessFailed, match="svc exited with code 3"):
        children.check()


async def test_a_timeout_names_the_hint_and_shows_the_log(children: Children) -> None:
    child = children.start(
        "slow", _python("print('still importing', flush=True); import time; time.sleep(60)")
    )
    await until_ready(
        log_says(child.log, "still importing"), what="the slow one", timeout_s=30, watch=[child]
    )
    with pytest.raises(ProcessFailed) as failed:
        await until_ready(
            lambda: False, what="the slow one", timeout_s=0.3, watch=[child], hint=" (--wait)"
        )
    message = str(failed.value)
    assert "the slow one not ready after 0.3 s (--wait)" in message
    assert f"slow still running (pid {child.pid})" in message
    assert "still importing" in message


def test_stop_sends_sigterm_and_reports_the_exit_code(children: Children) -> None:
    child = children.start("server", _python(_SERVER))
    children.wait_ready(log_says(child.log, "listening"), what="the server", timeout_s=60)
    assert child.stop(grace_s=30) == 0
    assert "bye" in child.tail()  # it was a graceful stop: its handler ran


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(children: Children) -> None:
    child = children.start("stubborn", _python(_STUBBORN))
    children.wait_ready(log_says(child.log, "listening"), what="it", timeout_s=60)
    began = time.monotonic()
    assert child.stop(grace_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - began < 10


def test_a_name_restarts_only_after_it_exits_and_its_lives_share_a_log(
    children: Children,
) -> None:
    first = children.start("w", _python(_SERVER))
    children.wait_ready(log_says(first.log, "listening"), what="w", timeout_s=60)
    with pytest.raises(RuntimeError, match="still running"):
        children.start("w", _python(_SERVER))
    first.kill()
    second = children.start("w", _python("print('second life', flush=True)"))
    assert second.process.wait(timeout=30) == 0
    assert children["w"] is second
    assert second.log == first.log
    text = children.log_of("w").read_text()
    assert "listening" in text
    assert "second life" in text


def test_stop_all_stops_every_life_last_started_first(children: Children) -> None:
    started = [children.start(name, _python(_SERVER)) for name in ("a", "b", "c")]
    for child in started:
        children.wait_ready(log_says(child.log, "listening"), what=child.name, timeout_s=60)
    assert children.stop_all(grace_s=30) == {"a": 0, "b": 0, "c": 0}
    assert all(child.exited() for child in started)


def test_a_child_gets_exactly_its_environment_and_no_stdin(tmp_path: Path) -> None:
    child = start(
        "env",
        _python("import os, sys; print(os.environ.get('ONLY'), sys.stdin.read() == '')"),
        log=tmp_path / "deep" / "env.log",
        env={"ONLY": "this", "PATH": "/usr/bin:/bin"},
    )
    assert child.process.wait(timeout=30) == 0
    assert child.tail().strip() == "this True"


def test_a_report_without_a_log_says_so() -> None:
    proc = subprocess.Popen(_python("pass"))
    proc.wait(timeout=30)
    assert Child("bare", proc).report() == "bare exited with code 0 (its output was not kept)"
