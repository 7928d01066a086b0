"""A local PostgreSQL server (``cofounder dev``'s database, the harness's throwaway one): its data
outlives it, a killed one starts again, and what it cannot do is said clearly."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from cofounder_runtime.localpostgres import LocalPostgresError, local_postgres, pg_bindir
from cofounder_testing.servers import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL binaries not installed"),
]


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder of the test's own that the ``postgres`` user can reach when we are root
    (pytest's ``/tmp/pytest-of-root`` is closed to other users)."""
    made = Path(tempfile.mkdtemp(prefix="cofounder-test-pg-"))
    made.chmod(0o711)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fetch(url: str, sql: str) -> list[object]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return [row[0] for row in await conn.fetch(sql)]
    finally:
        await conn.close()


def _refused(url: str) -> bool:
    try:
        asyncio.run(_fetch(url, "select 1"))
    except OSError:
        return True
    return False


def test_the_data_outlives_the_server(folder: Path) -> None:
    data = folder / "postgres"
    with local_postgres(data, port=free_port(), database="kept") as url:
        assert url.startswith("postgresql://postgres@127.0.0.1:")
        assert url.endswith("/kept")
        asyncio.run(_execute(url, "create table notes (body text); insert into notes values ('é')"))
        assert asyncio.run(_fetch(url, "show fsync")) == ["on"]  # durable by default
    assert _refused(url)
    assert (data / "PG_VERSION").is_file()
    assert (folder / "postgres.log").stat().st_size > 0  # beside the data directory
    # Another run on another port: the same cluster, the database not created twice.
    with local_postgres(data, port=free_port(), database="kept") as again:
        assert asyncio.run(_fetch(again, "select body from notes")) == ["é"]
    assert _refused(again)


def test_a_throwaway_server_does_not_sync(folder: Path) -> None:
    log = folder / "logs" / "pg.log"
    with local_postgres(folder / "data", port=free_port(), durable=False, log=log) as url:
        assert asyncio.run(_fetch(url, "show fsync")) == ["off"]
        assert asyncio.run(_fetch(url, "show listen_addresses")) == ["127.0.0.1"]
    assert "database system is ready to accept connections" in log.read_text()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except (OSError, NotADirectoryError):
            continue
        if entry.name.isdigit() and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def test_a_data_directory_left_by_a_killed_server_starts_again(folder: Path) -> None:
    data = folder / "postgres"
    with local_postgres(data, port=free_port()) as url:
        asyncio.run(_execute(url, "create table kept (n int); insert into kept values (1)"))
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        processes = [postmaster, *_children(postmaster)]
        os.kill(postmaster, signal.SIGKILL)
        # Its children notice and exit (the shared memory they hold would block a new server).
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in processes):
            assert time.monotonic() < deadline, (
                f"the killed server's processes live on: {processes}"
            )
            time.sleep(0.05)
    assert (data / "postmaster.pid").exists()  # stale: its process is gone
    with local_postgres(data, port=free_port()) as url:
        assert asyncio.run(_fetch(url, "select n from kept")) == [1]  # committed, so recovered
    assert _refused(url)


def test_a_server_already_running_on_the_data_directory_is_left_alone(folder: Path) -> None:
    data = folder / "postgres"
    with local_postgres(data, port=free_port(), durable=False) as url:
        with (
            pytest.raises(LocalPostgresError, match=r"already runs on .*Stop it with: "),
            local_postgres(data, port=free_port(), durable=False),
        ):
            pass
        assert asyncio.run(_fetch(url, "select 1")) == [1]


def test_a_failing_step_says_which_and_ends_with_the_log(folder: Path) -> None:
    with socket.socket() as taken:  # the server cannot listen on this port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with (
            pytest.raises(LocalPostgresError) as failed,
            local_postgres(folder / "data", port=taken.getsockname()[1], durable=False),
        ):
            pass
    message = str(failed.value)
    assert "pg_ctl start -D" in message
    assert "exited with code 1 and said: " in message
    assert f"--- the end of its log {folder / 'data.log'}:" in message
    assert "could not create any TCP/IP sockets" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_as_root_a_data_directory_the_server_user_cannot_reach_is_named() -> None:
    closed = Path(tempfile.mkdtemp(prefix="cofounder-test-pg-"))  # 0700, root's
    try:
        with (
            pytest.raises(LocalPostgresError, match=re.escape(f"{closed} is closed to it")),
            local_postgres(closed / "deep" / "data", port=free_port()),
        ):
            pass
    finally:
        shutil.rmtree(closed, ignore_errors=True)


def test_the_binaries_can_be_chosen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, folder: Path
) -> None:
    monkeypatch.setenv("COFOUNDER_PG_BINDIR", str(tmp_path))
    assert pg_bindir() == tmp_path
    with (
        pytest.raises(LocalPostgresError, match=re.escape(str(tmp_path / "initdb"))),
        local_postgres(folder / "data", port=free_port()),
    ):
        pass


def test_a_database_name_is_checked(folder: Path) -> None:
    with (
        pytest.raises(ValueError, match="letters, digits"),
        local_postgres(folder / "data", port=free_port(), database="x'; drop"),
    ):
        pass
