"""A PostgreSQL server of our own, from this machine's binaries (``cofounder dev``, the tests).

``cofounder dev`` keeps one in its work directory when ``DATABASE_URL`` is unset (its data kept
between runs); the test harness starts a throwaway one in a temporary folder when no server is
configured or running. :func:`local_postgres` creates the cluster when the data directory holds
none yet, starts the server, creates the database when it is missing and stops the server at the
end. A data directory left by a crashed server (a stale ``postmaster.pid``) starts again: the
server sees that the process it names is gone, and recovers from its write-ahead log.

The server listens on 127.0.0.1 only, with ``trust`` authentication (anyone on this machine may
connect as ``postgres``: a development database, never a deployment's). Its unix socket goes to
a temporary folder of its own: never the system server's ``/var/run/postgresql``, and a short
path whatever the data directory's (a socket's path may not exceed 107 bytes). Its output, and
what ``initdb`` and ``pg_ctl`` print, is appended to a log file opened here, so the log may be
where the server's user cannot write.

PostgreSQL refuses to run as root: as root, the data directory belongs to the ``postgres`` user
(Debian's package creates it) and every command runs through ``runuser -u postgres --``. That
user must be able to reach the data directory; a folder above it closed to other users (root's
home, pytest's ``/tmp/pytest-of-root``) is an error that names the folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

__all__ = ["LocalPostgresError", "local_postgres", "pg_bindir", "server_can_reach"]

_LOG_TAIL_CHARS: Final = 3000
_DATABASE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SERVER_USER: Final = "postgres"


class LocalPostgresError(RuntimeError):
    """A step of running the local server failed (the message has the command, what it said
    and the end of the server's log)."""


def pg_bindir() -> Path | None:
    """The folder with ``initdb``, ``pg_ctl`` and the clients, or None when there is none.

    In order: ``$COFOUNDER_PG_BINDIR``; the newest ``/usr/lib/postgresql/<version>/bin`` with an
    ``initdb`` (Debian's packages, which put none of these on PATH); the folder of an ``initdb``
    on PATH, symlinks resolved (a link in ``/usr/local/bin`` stands for a whole folder).
    """
    chosen = os.environ.get("COFOUNDER_PG_BINDIR")
    if chosen:
        return Path(chosen)
    installed = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if installed:
        return max(installed, key=_version)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _version(bindir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/16/bin`` → (16,), so 16 sorts above 9.6; () when not a number."""
    try:
        return tuple(int(part) for part in bindir.parent.name.split("."))
    except ValueError:
        return ()


@dataclass(frozen=True)
class _Cluster:
    """The commands on one data directory, run as the server's user, output to ``log``."""

    bindir: Path
    data: Path
    log: IO[bytes]
    log_path: Path
    as_root: bool

    def pg(self, program: str) -> str:
        """A PostgreSQL program's path."""
        return str(self.bindir / program)

    @property
    def prefix(self) -> list[str]:
        return ["runuser", "-u", _SERVER_USER, "--"] if self.as_root else []

    def run(
        self, argv: list[str], *, check: bool = True, stdout: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the server's user; stdout goes to the log unless ``stdout``
        says otherwise (``subprocess.PIPE``, ``DEVNULL``), stderr is kept. The working
        directory is ``/``: PostgreSQL's programs change back to theirs, which the server's
        user may not be able to reach."""
        command = [*self.prefix, *argv]
        self.log.flush()
        try:
            done = subprocess.run(
                command,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=self.log if stdout is None else stdout,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise LocalPostgresError(f"could not run {shlex.join(command)}: {exc}") from exc
        if check and done.returncode != 0:
            raise self.failed(command, f"exited with code {done.returncode}", done.stderr)
        return done

    def failed(self, command: list[str], what: str, stderr: str = "") -> LocalPostgresError:
        self.log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            text = f"(cannot be read: {exc})"
        tail = text[-_LOG_TAIL_CHARS:] if text.strip() else "(empty)"
        said = f" and said: {stderr.strip()}" if stderr.strip() else ""
        return LocalPostgresError(
            f"PostgreSQL on {self.data}: {shlex.join(command)} {what}{said}\n"
            f"--- the end of its log {self.log_path}:\n{tail}"
        )

    def has_cluster(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def running(self) -> bool:
        """Whether a server runs on this data directory now (``pg_ctl status``: a stale
        ``postmaster.pid`` whose process is gone is not one)."""
        status = [self.pg("pg_ctl"), "status", "-D", str(self.data)]
        return self.run(status, check=False, stdout=subprocess.DEVNULL).returncode == 0

    def stop(self) -> None:
        """Stop the server: fast (clients disconnected, a checkpoint), else immediate (the next
        start recovers from the write-ahead log)."""
        for mode in ("fast", "immediate"):
            stop = [self.pg("pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w"]
            if self.run(stop, check=False).returncode == 0 or not self.running():
                return
        raise self.failed(
            [self.pg("pg_ctl"), "stop", "-D", str(self.data)], "did not stop the server"
        )


def _server_user() -> tuple[int, int]:
    """As root: the uid and gid the server runs as."""
    try:
        entry = pwd.getpwnam(_SERVER_USER)
    except KeyError:
        raise LocalPostgresError(
            f"PostgreSQL refuses to run as root, and there is no {_SERVER_USER} user to run it "
            "as (Debian's postgresql package creates it): run as another user, or create it"
        ) from None
    return entry.pw_uid, entry.pw_gid


def server_can_reach(folder: Path) -> bool:
    """Whether the server's user can enter every folder down to ``folder`` (always, unless we
    are root: then the server runs as ``postgres``, and a folder such as ``/root`` is closed to
    it). ``folder`` itself need not exist yet: its nearest existing parent decides."""
    if os.geteuid() != 0:
        return True
    existing = next((f for f in (folder, *folder.parents) if f.exists()), Path("/"))
    done = subprocess.run(
        ["runuser", "-u", _SERVER_USER, "--", "test", "-x", str(existing)],
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _check_reachable(cluster: _Cluster) -> None:
    """As root: the server's user can enter and write the data directory; else name the first
    folder above it that is closed to that user."""

    def can(*test: str) -> bool:
        done = cluster.run(["test", *test], check=False, stdout=subprocess.DEVNULL)
        return done.returncode == 0

    if can("-w", str(cluster.data), "-a", "-x", str(cluster.data)):
        return
    folders = [*reversed(cluster.data.parents), cluster.data]
    blocked = next((f for f in folders if not can("-x", str(f))), cluster.data)
    raise LocalPostgresError(
        f"PostgreSQL runs as the {_SERVER_USER} user here (we are root), and it cannot reach "
        f"its data directory {cluster.data}: {blocked} is closed to it. Put the data directory "
        "where that user can reach it (cofounder dev: --workdir), or give it access to "
        f"{blocked}."
    )


@contextlib.contextmanager
def local_postgres(
    data_dir: Path,
    *,
    port: int,
    database: str = "cofounder",
    durable: bool = True,
    startup_timeout_s: float = 120,
    log: Path | None = None,
) -> Iterator[str]:
    """Run a PostgreSQL server on ``data_dir`` (created, with a cluster, when it holds none yet)
    on 127.0.0.1:``port``; yield ``postgresql://postgres@127.0.0.1:<port>/<database>``, the
    database created when missing; stop the server on exit.

    ``durable=False`` turns ``fsync`` off (a throwaway server: a machine crash may corrupt it).
    ``startup_timeout_s`` is how long ``pg_ctl`` waits for the server to accept connections
    (crash recovery included). ``log`` (default: ``<data_dir>.log`` beside it) gets the output.
    Raises :class:`LocalPostgresError` when a step fails, or when a server already runs on
    ``data_dir`` (it is left alone).
    """
    if not _DATABASE_NAME.fullmatch(database):
        raise ValueError(f"database name {database!r}: letters, digits and _ only")
    bindir = pg_bindir()
    if bindir is None:
        raise LocalPostgresError(
            "no PostgreSQL binaries (initdb, pg_ctl): install PostgreSQL's server (Debian: "
            "apt-get install postgresql) or set COFOUNDER_PG_BINDIR to the folder that has them"
        )
    data = data_dir.resolve()
    log_path = (log or data.with_name(f"{data.name}.log")).resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    owner = _server_user() if os.geteuid() == 0 else None
    with log_path.open("ab") as out:
        cluster = _Cluster(bindir, data, out, log_path, as_root=owner is not None)
        fresh = not cluster.has_cluster()
        data.mkdir(parents=True, exist_ok=True)
        if owner:
            if fresh:
                os.chown(data, *owner)
            _check_reachable(cluster)
        if fresh:
            cluster.run(
                [cluster.pg("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                 # UTF-8 whatever this machine's locale (a POSIX one would give SQL_ASCII).
                 "-E", "UTF8", "--locale=C",
                 *([] if durable else ["--no-sync"])]
            )  # fmt: skip
        if cluster.running():
            raise LocalPostgresError(
                f"a PostgreSQL server already runs on {data} (left by a run that did not stop "
                f"it, or another one using it now). Stop it with: "
                f"{shlex.join([*cluster.prefix, str(bindir / 'pg_ctl'), 'stop', '-D', str(data)])}"
            )
        sockets = Path(tempfile.mkdtemp(prefix="cofounder-pgsocket-"))
        started = False
        try:
            if owner:
                os.chown(sockets, *owner)
            options = [
                "-p", str(port), "-k", str(sockets), "-c", "listen_addresses=127.0.0.1",
                *([] if durable else ["-c", "fsync=off"]),
            ]  # fmt: skip
            started = True  # from here on, a server may be running: stop it on the way out
            cluster.run(
                [cluster.pg("pg_ctl"), "start", "-D", str(data), "-w", "-t",
                 str(math.ceil(startup_timeout_s)), "-o", shlex.join(options)]
            )  # fmt: skip
            _create_database(cluster, port, database)
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            try:
                if started:
                    cluster.stop()
            finally:
                shutil.rmtree(sockets, ignore_errors=True)


def _create_database(cluster: _Cluster, port: int, database: str) -> None:
    server = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    exists = cluster.run(
        [cluster.pg("psql"), "-X", "-A", "-t", *server, "-d", "postgres",
         # The name matched _DATABASE_NAME: nothing to quote.
         "-c", f"select 1 from pg_database where datname = '{database}'"],  # noqa: S608
        stdout=subprocess.PIPE,
    )  # fmt: skip
    if exists.stdout.strip() != "1":
        cluster.run([cluster.pg("createdb"), *server, database])
