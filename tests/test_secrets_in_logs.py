"""No secret in any log: every service a real process with ``ENVIRONMENT=production`` and a
secret in each place one goes (JWT secret, admin token, a password in the database URL and in
the Redis URL, the model's API key, E2B's key, AWS's secret key), a build run through, then
errors provoked in every service (poison entries on each one's streams; the database taken away
mid-run, so requests fail with 500 and handlers raise), and every log read for every secret, as
written and as JSON or ``repr`` would escape it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis as sync_redis

from cofounder_contracts.streams import (
    AGENT_WORK,
    BUDGET_USAGE,
    BUILD_EVENTS,
    BUILD_REQUESTS,
    SNAPSHOT_REQUESTS,
)
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_testing.servers import free_port, redis_server
from cofounder_testing.services import offline_env, service_processes
from cofounder_testing.waiting import Watched, http_ok, wait_started

pytestmark = pytest.mark.e2e

SERVICES = ("gateway", "context-assembler", "agent-runner", "budget", "snapshot")
#: Which service reads which stream: a poison entry on each makes each one log an error.
POISONED = {
    "context-assembler": BUILD_REQUESTS.name,
    "agent-runner": AGENT_WORK.name,
    "gateway": BUILD_EVENTS.name,
    "budget": BUDGET_USAGE.name,
    "snapshot": SNAPSHOT_REQUESTS.name,
}


def _with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with start("demo-webapp") as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[str]:
    """A Redis of this test's own: the services consume the global streams from the start, and
    the session's server holds what earlier tests left on them."""
    with redis_server() as url:
        yield url


def test_no_secret_reaches_any_log(
    own_redis: str, own_database_url: str, model: ScriptedModel, tmp_path: Path
) -> None:
    redis_url = own_redis
    hexes = {name: secrets.token_hex(32) for name in ("jwt", "admin", "anthropic", "e2b", "aws")}
    pg_password = "pg-" + secrets.token_urlsafe(18)
    redis_password = "rd-" + secrets.token_urlsafe(18)
    redis_user = f"svc-{uuid.uuid4().hex[:8]}"
    admin_client = sync_redis.Redis.from_url(redis_url)
    # A user of this run's own Redis (the harness's throwaway server) that needs a password.
    admin_client.acl_setuser(
        redis_user,
        enabled=True,
        passwords=[f"+{redis_password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )
    pg_user = urlsplit(own_database_url).username or "postgres"
    database = _with_password(own_database_url, pg_user, pg_password)  # trust auth ignores it
    port = free_port()
    env = offline_env(
        ENVIRONMENT="production",
        JWT_SECRET=hexes["jwt"],
        ADMIN_TOKEN=hexes["admin"],
        REDIS_URL=_with_password(redis_url, redis_user, redis_password),
        DATABASE_URL=database,
        ANTHROPIC_API_KEY="sk-ant-" + hexes["anthropic"],
        ANTHROPIC_BASE_URL=model.url,
        E2B_API_KEY="e2b_" + hexes["e2b"],
        AWS_SECRET_ACCESS_KEY=hexes["aws"],
        SANDBOX="local",
        SANDBOX_LOCAL_IN_PRODUCTION="true",
        SANDBOX_ROOT=str(tmp_path / "sandboxes"),
        SNAPSHOT_LOCAL_DIR=str(tmp_path / "snapshots"),
        PORT=str(port),
        CONSUMER_BLOCK_MS="200",
        CONSUMER_RETRY_BASE_MS="50",
        CONSUMER_RETRY_MAX_MS="200",
        DATABASE_POOL_SIZE="4",
        WRITE_POOL_SIZE="2",
    )
    # The snapshot service reads local sandboxes here (an E2B key would send it to E2B).
    snapshot_env = {k: v for k, v in env.items() if k != "E2B_API_KEY"}
    every_secret = [
        hexes["jwt"],
        hexes["admin"],
        hexes["aws"],
        "sk-ant-" + hexes["anthropic"],
        "e2b_" + hexes["e2b"],
        pg_password,
        redis_password,
        database,
        env["REDIS_URL"],
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    gateway = f"http://127.0.0.1:{port}"
    stack = [(s, snapshot_env if s == "snapshot" else env) for s in SERVICES]
    with (
        service_processes(stack, logs) as procs,
        httpx.Client(base_url=gateway, timeout=30) as http,
    ):
        wait_started(lambda: http_ok(f"{gateway}/v1/readyz"), what="the gateway", watch=procs)
        admin = {"Authorization": f"Bearer {hexes['admin']}"}
        demo = http.post("/v1/admin/demo", headers=admin)
        assert demo.status_code == 201, demo.text
        founder = demo.json()
        auth = {"Authorization": f"Bearer {founder['token']}"}
        created = http.post(f"/v1/projects/{founder['project_id']}/builds", json={}, headers=auth)
        assert created.status_code == 202, created.text
        build = created.json()["id"]

        def ended() -> bool:
            status = http.get(f"/v1/builds/{build}", headers=auth).json()["status"]
            return status in {"ready", "failed", "cancelled"}

        _wait("the build to end", ended, procs)

        # Errors in every service (what each log held before, such as a start-up warning on
        # Redis's durability, does not count): a poison entry on each one's stream...
        marks = {s: (logs / f"{s}.log").stat().st_size for s in SERVICES}
        for stream in POISONED.values():
            admin_client.xadd(stream, {"payload": b'{"type": "nonsense", "password": "x"}'})
        # ...and the database gone mid-run: requests and handlers fail with tracebacks.
        _allow_connections(own_database_url, allowed=False)
        try:
            # A connection of its own: the first client's kept-alive one may be closed by now.
            with httpx.Client(base_url=gateway, timeout=30) as fresh:
                for _ in range(3):
                    failed = fresh.get(f"/v1/builds/{build}", headers=auth)
                    assert failed.status_code >= 500
                project = founder["project_id"]
                again = fresh.post(f"/v1/projects/{project}/builds", json={}, headers=auth)
                assert again.status_code >= 500
            _wait(
                "an error logged by every service",
                lambda: _all_logged_errors(logs, marks),
                procs,
            )
        finally:
            _allow_connections(own_database_url, allowed=True)
    admin_client.acl_deluser(redis_user)
    admin_client.close()

    texts = {p.name: p.read_text(errors="replace") for p in logs.glob("*.log")}
    assert set(texts) == {f"{s}.log" for s in SERVICES}
    for name, text in texts.items():
        for secret in every_secret:
            for form in {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]}:
                assert form not in text, f"a secret is in {name}"
    # The run said something worth checking: the gateway's 500s with their tracebacks.
    failures = [
        json.loads(line) for line in texts["gateway.log"].splitlines() if '"request failed"' in line
    ]
    assert failures
    assert all(f["exception"][0]["frames"] for f in failures)


def _all_logged_errors(logs: Path, since: dict[str, int]) -> bool:
    """Whether every service logged an error or a warning after its log's size in ``since``."""
    for service in SERVICES:
        with (logs / f"{service}.log").open("rb") as log:
            log.seek(since[service])
            lines = log.read().decode(errors="replace").splitlines()
        if not any('"level": "error"' in line or '"level": "warning"' in line for line in lines):
            return False
    return True


def _admin_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    return urlunsplit(parts._replace(path="/postgres", scheme="postgresql")), name


def _allow_connections(url: str, *, allowed: bool) -> None:
    """Open or close ``url``'s database to new connections, superusers included, and with it
    closed end the ones it has."""
    server, name = _admin_url(url)

    async def run() -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
        finally:
            await conn.close()

    asyncio.run(run())


def _wait(what: str, check: Callable[[], bool], procs: Sequence[Watched]) -> None:
    deadline = time.monotonic() + 180
    while True:
        for proc in procs:
            if proc.exited():
                raise AssertionError(f"waiting for {what}: {proc.report()}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
