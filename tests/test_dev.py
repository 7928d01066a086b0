"""The README's run command on a fresh checkout with nothing configured: ``cofounder dev --once``
starts Redis, PostgreSQL, the scripted model and every service, runs the demo build to its end
and prints a preview URL that answered HTTP 200."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from cofounder_cli import dev as dev_command
from cofounder_cli.main import app
from cofounder_runtime.localpostgres import local_postgres, pg_bindir
from cofounder_testing.servers import free_port
from cofounder_testing.services import USER_CONFIGURATION
from cofounder_testing.waiting import startup_deadline_s

pytestmark = pytest.mark.e2e

CONFIGURATION = USER_CONFIGURATION
needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)
needs_postgres = pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL is not installed")


def startup() -> list[str]:
    """``cofounder dev`` waits for Redis, PostgreSQL and the gateway as long as the harness
    would."""
    return ["--startup-timeout", str(startup_deadline_s())]


def unconfigured() -> dict[str, str]:
    """This environment without the variables that point ``cofounder dev`` at servers: it
    starts its own (Redis, PostgreSQL, the scripted model)."""
    return {k: v for k, v in os.environ.items() if k not in CONFIGURATION}


@pytest.fixture
def checkout() -> Iterator[Path]:
    """The folder ``cofounder dev`` runs in. Not ``tmp_path``: as root, PostgreSQL runs as the
    ``postgres`` user, and pytest's ``/tmp/pytest-of-root`` is closed to that user."""
    made = Path(tempfile.mkdtemp(prefix="cofounder-dev-test-"))
    made.chmod(0o711)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


async def _metered(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow(
            "select count(*), coalesce(sum(cost_micros), 0) from budget_ledger"
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
    except ConnectionRefusedError:
        return True
    return False


@needs_redis
@needs_postgres
def test_dev_once_builds_the_demo_app_with_nothing_configured(checkout: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cofounder_cli", "dev", "--once", *startup()],
        cwd=checkout,
        env=unconfigured(),
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
    # The live build page's address, signed in by a one-time code in its fragment.
    assert re.search(
        r"watch it in a browser: http://127\.0\.0\.1:\d+/app/builds/[0-9a-f-]{36}#code=\S+", output
    ), output
    # Live progress: tokens and the day's budget on every iteration.
    assert re.search(
        r"iteration \d+: .*tokens [\d,]+ in / [\d,]+ out; budget [\d.,]+ of [\d.,]+ today", output
    ), output
    assert "completed: version 1" in output
    assert re.search(r"snapshot v\d+: \d+ files", output), output
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        # The agent's screenshot of its preview, by the gateway route that serves it.
        shot = re.search(r"screenshot \d+x\d+: (http://\S+/screenshots/\S+\.png)", output)
        assert shot, output
    # All it made is under the working directory's .cofounder/dev; nothing is left running.
    workdir = (checkout / ".cofounder" / "dev").resolve()
    database = re.search(
        rf"database postgresql://postgres@127\.0\.0\.1:(\d+)/cofounder "
        rf"\(data in {re.escape(str(workdir / 'postgres'))}\)",
        output,
    )
    assert database, output  # its own PostgreSQL, not one DATABASE_URL names
    assert (workdir / "postgres" / "PG_VERSION").is_file()
    assert not list(workdir.glob("*.db"))  # no SQLite file any more
    assert list((workdir / "sandboxes").glob("*/project/app.py"))
    logs = workdir / "logs"
    assert {p.stem for p in logs.glob("*.log")} >= {
        "gateway",
        "context-assembler",
        "agent-runner",
        "redis",
        "postgres",
        "scripted-model",
        "snapshot",
        "budget",
    }
    assert list((workdir / "snapshots").rglob("*.json"))
    assert _refused(int(found.group(2)))  # the demo app's server was stopped with the rest
    assert _refused(int(database.group(1)))  # and the database
    assert _leftovers(workdir) == []  # no service, database, sandbox or pasta
    # The data outlives the run: the next one (here, the same server by hand) finds it.
    with local_postgres(workdir / "postgres", port=free_port()) as url:
        metered = asyncio.run(_metered(url))
    assert metered[0] >= 8  # every model call of the demo build was metered
    assert metered[1] > 0


@needs_redis
@needs_postgres
def test_dev_once_with_sandbox_e2b_builds_the_demo_app_on_the_e2b_standin(checkout: Path) -> None:
    """``SANDBOX=e2b`` without ``E2B_API_KEY``: the runner and the snapshot service use E2B's
    SDK against the stand-in ``cofounder dev`` starts; the preview answers through it."""
    result = subprocess.run(
        [sys.executable, "-m", "cofounder_cli", "dev", "--once", *startup()],
        cwd=checkout,
        env={**unconfigured(), "SANDBOX": "e2b"},
        capture_output=True,
        text=True,
        timeout=startup_deadline_s() + 180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    standin = re.search(r"E2B stand-in at (http://127\.0\.0\.1:\d+)", output)
    assert standin, output
    preview = re.search(
        r"preview: https://3000-\S+\.e2b-standin\.local \(HTTP 200, through the E2B stand-in "
        rf"at {re.escape(standin.group(1))}\)",
        output,
    )
    assert preview, output
    assert "completed: version 1" in output
    assert re.search(r"snapshot v\d+: \d+ files", output), output
    workdir = (checkout / ".cofounder" / "dev").resolve()
    # The build's files are in a stand-in sandbox (written through envd), none in a local one.
    assert list((workdir / "e2b").glob("*/project/app.py"))
    assert not list((workdir / "sandboxes").glob("*/project/app.py"))
    assert list((workdir / "snapshots").rglob("*.json"))  # read by the snapshot service's tar
    logs = workdir / "logs"
    assert (logs / "e2b-standin.log").is_file()
    assert "sandbox=e2b" in (logs / "agent-runner.log").read_text()
    assert _leftovers(workdir) == []  # the stand-in and its sandboxes stopped with the rest


def test_dev_without_postgresql_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # not started: never reached
    monkeypatch.setattr(dev_command, "pg_bindir", lambda: None)
    result = CliRunner().invoke(app, ["dev", "--once", "--workdir", str(tmp_path / "dev")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: DATABASE_URL is not set and no PostgreSQL was found to start one (no initdb in "
        "$COFOUNDER_PG_BINDIR, /usr/lib/postgresql/*/bin or on PATH): install Debian's "
        "postgresql (apt-get install postgresql) or point DATABASE_URL at a server"
    ]
    assert not (tmp_path / "dev" / "postgres").exists()


def _leftovers(workdir: Path) -> list[str]:
    """Processes that still belong to a ``cofounder dev`` run: its services (their environment
    names its folder), its PostgreSQL server and its sandboxes' bubblewrap and pasta (their
    command lines do)."""
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


@needs_redis
@needs_postgres
def test_ctrl_c_stops_everything_dev_started(checkout: Path) -> None:
    dev = subprocess.Popen(
        [sys.executable, "-m", "cofounder_cli", "dev", *startup()],
        cwd=checkout,
        env=unconfigured(),
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
        database = re.search(r"database postgresql://postgres@127\.0\.0\.1:(\d+)/", "".join(lines))
        preview = re.search(r"preview: http://127\.0\.0\.1:(\d+)", "".join(lines))
        assert redis, "".join(lines)
        assert database, "".join(lines)
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
    assert _leftovers(checkout / ".cofounder" / "dev") == []
    for port in (int(redis.group(1)), int(database.group(1)), int(preview.group(1))):
        assert _refused(port), port


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_a_work_directory_closed_to_the_server_keeps_its_database_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout under /root (0700): ``postgres`` cannot reach ``<workdir>/postgres``, so the
    data goes to a folder of that work directory's own it can reach, the same on every run."""
    if pg_bindir() is None:
        pytest.skip("no PostgreSQL programs here")
    closed = tmp_path / "home"
    closed.mkdir(mode=0o700)
    workdir = closed / "checkout" / ".cofounder" / "dev"
    workdir.mkdir(parents=True)
    reachable = Path(tempfile.mkdtemp(prefix="cofounder-dev-root-"))
    reachable.chmod(0o711)
    try:
        monkeypatch.setattr(dev_command, "_REACHABLE_ROOT", reachable / "dev")
        chosen = dev_command._data_dir(workdir)
        assert chosen.is_relative_to(reachable)
        assert dev_command._data_dir(workdir) == chosen  # kept from one run to the next
        assert dev_command._data_dir(closed.parent / "other") != chosen
        with local_postgres(chosen, port=free_port(), durable=False) as url:
            assert url.startswith("postgresql://")
        open_workdir = reachable / "open"
        open_workdir.mkdir(mode=0o755)
        assert dev_command._data_dir(open_workdir) == open_workdir / "postgres"
    finally:
        shutil.rmtree(reachable, ignore_errors=True)
