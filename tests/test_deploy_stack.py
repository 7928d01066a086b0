"""The deployment's promises, checked on running services: every service as a real process on a
Redis that enforces deploy/redis's ACL users (each service with its own user), PostgreSQL, the
scripted model and local sandboxes.

- The least-privilege users are enough: a demo build goes from POST to ``ready``.
- They are least privilege: a user cannot write another service's streams or keys, nor flush.
- The dashboard and the alert rules use only metric names the services export (scraped from
  each service's ``/metrics``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import NoPermissionError, ResponseError

from cofounder_runtime.localredis import redis_server_binary
from cofounder_runtime.service import discover_services
from cofounder_sandbox.local import LocalSandboxes
from cofounder_scripted_model.process import start
from cofounder_testing.databases import migrated_database
from cofounder_testing.servers import free_port
from cofounder_testing.services import offline_env, service_processes
from cofounder_testing.waiting import Watched, http_ok, wait_started

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ADMIN = {"Authorization": "Bearer dev-admin-token"}


@dataclass
class Stack:
    gateway: str
    metrics: dict[str, str]  # service -> /metrics URL
    redis_port: int
    passwords: dict[str, str]
    root: Path
    services: list[Watched]


def _wait(check: Callable[[], object], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.TransportError, OSError, sync_redis.ConnectionError):
            pass  # not up yet
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _pings(client: sync_redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except sync_redis.ConnectionError:
        return False  # not up yet


@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A database of its own: the budget service wakes every sleeping build it finds there.
    with migrated_database(database_url) as database:
        yield from _stack(database, tmp_path_factory)


def _stack(migrated_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("redis-server is not installed: the ACL file needs a server of its own")
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout
    if not re.search(r"v=([7-9]|\d\d)\.", version):
        pytest.skip(f"deploy's ACL selectors need Redis 7 or later; found {version.strip()}")
    root = tmp_path_factory.mktemp("stack")
    services = sorted(discover_services())
    passwords = {s: f"pw-{s}-{os.getpid()}" for s in [*services, "ops"]}
    env_pw = {f"{s.upper().replace('-', '_')}_PASSWORD": p for s, p in passwords.items()}
    acl = subprocess.run(
        ["bash", str(DEPLOY / "redis" / "render-acl.sh")],
        env={"PATH": os.environ["PATH"], **env_pw},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (root / "users.acl").write_text(acl)
    redis_port = free_port()
    with (root / "redis.log").open("ab") as log:
        redis_proc = subprocess.Popen(
            [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--aclfile", str(root / "users.acl"), "--dir", str(root)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    ops = sync_redis.Redis(port=redis_port, username="ops", password=passwords["ops"])
    try:
        wait_started(
            lambda: _pings(ops),
            what="the ACL-protected redis-server",
            watch=[Watched("redis-server", redis_proc, root / "redis.log")],
        )
    except AssertionError:
        redis_proc.kill()
        redis_proc.wait()
        raise
    finally:
        ops.close()
    port = free_port()
    metrics = {s: free_port() for s in services}
    try:
        with start("demo-webapp") as model:
            env = offline_env(
                DATABASE_URL=migrated_database_url,
                PORT=str(port),
                ANTHROPIC_BASE_URL=model.url,
                SANDBOX="local",
                SANDBOX_ROOT=str(root / "sandboxes"),
                CONSUMER_BLOCK_MS="100",
                LOG_JSON="false",
            )
            own_user = {  # each service on its own ACL user
                s: f"redis://{s}:{passwords[s]}@127.0.0.1:{redis_port}/0" for s in services
            }
            each = [
                (s, {**env, "REDIS_URL": own_user[s], "METRICS_PORT": str(metrics[s])})
                for s in services
            ]
            with service_processes(each, root) as started:
                try:
                    yield Stack(
                        gateway=f"http://127.0.0.1:{port}",
                        metrics={s: f"http://127.0.0.1:{p}/metrics" for s, p in metrics.items()},
                        redis_port=redis_port,
                        passwords=passwords,
                        root=root,
                        services=started,
                    )
                finally:
                    asyncio.run(LocalSandboxes(root / "sandboxes").kill_all())
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


def _logs(stack: Stack) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(stack.root.glob("*.log"))
    )


def test_a_demo_build_completes_with_a_least_privilege_redis_user_per_service(
    stack: Stack,
) -> None:
    with httpx.Client(base_url=stack.gateway, timeout=30) as http:
        ready = f"{stack.gateway}/v1/readyz"
        wait_started(lambda: http_ok(ready), what="the gateway", watch=stack.services)
        demo = http.post("/v1/admin/demo", headers=ADMIN).json()
        auth = {"Authorization": f"Bearer {demo['token']}"}
        build = http.post(f"/v1/projects/{demo['project_id']}/builds", json={}, headers=auth)
        assert build.status_code == 202, build.text
        url = f"/v1/builds/{build.json()['id']}"
        try:
            _wait(lambda: http.get(url, headers=auth).json()["status"] == "ready", "ready", 120)
        except AssertionError:
            raise AssertionError(f"{http.get(url, headers=auth).json()}\n{_logs(stack)}") from None
        assert http.get(url, headers=auth).json()["preview_url"]
    assert "NOPERM" not in _logs(stack)


def test_each_redis_user_is_kept_to_its_own_streams_and_keys(stack: Stack) -> None:
    def as_user(name: str) -> sync_redis.Redis:
        return sync_redis.Redis(
            port=stack.redis_port, username=name, password=stack.passwords[name]
        )

    denied: list[tuple[str, Callable[[sync_redis.Redis], object]]] = [
        ("snapshot", lambda r: r.xadd("cofounder.builds.requested", {"x": "1"})),
        ("context-assembler", lambda r: r.xadd("cofounder.budget.usage", {"x": "1"})),
        ("gateway", lambda r: r.set("cofounder.budget.closed:{u}", "1")),
        ("agent-runner", lambda r: r.set("cofounder.budget.closed:{u}", "1")),
        ("budget", lambda r: r.set("cofounder.agent.lease:{b}", "1")),
        ("gateway", lambda r: r.flushall()),
        ("ops", lambda r: r.flushdb()),
        ("budget", lambda r: r.config_get("*")),
    ]
    for user, action in denied:
        client = as_user(user)
        try:
            with pytest.raises((NoPermissionError, ResponseError), match=r"(?i)perm"):
                action(client)
        finally:
            client.close()
    runner = as_user("agent-runner")
    try:
        assert runner.get("cofounder.budget.closed:{nobody}") is None  # the gate: read-only
    finally:
        runner.close()


def _referenced_metrics() -> set[str]:
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    dashboard = json.loads((DEPLOY / "grafana" / "cofounder.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    text = alerts + "\n".join(exprs)
    return set(re.findall(r"\b((?:cofounder|process)_[a-z_]+)\b", text))


def test_dashboards_and_alerts_use_only_metric_names_the_services_export(stack: Stack) -> None:
    exported: set[str] = set()
    for service, url in stack.metrics.items():
        watch = [w for w in stack.services if w.name == service]
        wait_started(lambda u=url: http_ok(u), what=f"{service}'s metrics", watch=watch)
        for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
                "summary": ["_sum", "_count"],
            }.get(family.type, [""])
            exported |= {family.name + s for s in suffixes}
    referenced = _referenced_metrics()
    assert len(referenced) >= 15
    missing = sorted(referenced - exported)
    assert not missing, f"used by the dashboard or alerts but exported by no service: {missing}"
