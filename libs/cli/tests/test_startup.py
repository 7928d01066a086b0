"""``cofounder --help`` and the commands that only call the gateway start without importing what
other commands need (the services, SQLAlchemy and Alembic, the S3 client, the web stack). The
time it takes is measured by benchmarks/cli_startup.py; these tests check what gets imported."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cofounder_testing.waiting import startup_deadline_s

#: Top-level packages none of these command lines may import.
HEAVY = frozenset(
    {
        "aioboto3",
        "alembic",
        "anthropic",
        "asyncpg",
        "boto3",
        "botocore",
        "cofounder_agent_runner",
        "cofounder_budget",
        "cofounder_budgeting",
        "cofounder_context_assembler",
        "cofounder_db",
        "cofounder_gateway",
        "cofounder_runtime",
        "cofounder_sandbox",
        "cofounder_snapshot",
        "cofounder_snapshots",
        "cofounder_testing",
        "e2b",
        "fastapi",
        "httpx",
        "pydantic_settings",
        "redis",
        "sqlalchemy",
        "starlette",
        "structlog",
        "uvicorn",
        "uvloop",
    }
)

#: Runs the CLI as the console script does, then writes every imported module's name to a file.
_PROBE = """
import json, sys
argv, out = json.loads(sys.argv[1]), sys.argv[2]
sys.argv = ["cofounder", *argv]
from cofounder_cli.main import main
try:
    main()
except SystemExit as done:
    code = done.code
else:
    code = 0
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def _imported(tmp_path: Path, *args: str) -> tuple[set[str], str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args), str(out)],
        capture_output=True,
        text=True,
        timeout=startup_deadline_s(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(out.read_text())
    assert found["code"] in (0, None), done.stderr
    return {name.partition(".")[0] for name in found["modules"]}, done.stdout


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("--help",), "Cofounder build pipeline"),
        (("builds", "get", "--help"), "One build: status, progress"),
        (("seed", "demo", "--help"), "--export"),
    ],
)
def test_help_imports_none_of_the_heavy_packages(
    tmp_path: Path, args: tuple[str, ...], shown: str
) -> None:
    imported, stdout = _imported(tmp_path, *args)
    assert shown in stdout
    assert sorted(imported & HEAVY) == []


def test_the_top_level_help_still_lists_the_groups_services_add(tmp_path: Path) -> None:
    """The gateway's ``token`` is listed with its help, without importing it (``seed`` is the
    CLI's own, over the admin API)."""
    imported, stdout = _imported(tmp_path, "--help")
    assert "Bearer tokens for development." in stdout
    assert "Seed users, projects, briefs and interviews" in stdout
    assert "cofounder_gateway" not in imported


def test_a_group_a_service_adds_is_loaded_when_used() -> None:
    from cofounder_cli.main import app

    result = CliRunner().invoke(app, ["token", "--help"])
    assert result.exit_code == 0, result.output
    assert "mint" in result.output
    result = CliRunner().invoke(app, ["token", "mint", "--user", "u-1", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    assert result.output.count(".") == 2  # a JWT: header.payload.signature


def test_the_help_read_from_source_is_the_help_typer_shows() -> None:
    """The stand-in's help (read from the module's source) is the loaded group's."""
    import typer

    from cofounder_cli.plugins import COMMAND_ENTRY_POINTS, load_group, static_help

    root = typer.main.get_group(typer.Typer())
    found = list(entry_points(group=COMMAND_ENTRY_POINTS))
    assert {ep.name for ep in found} >= {"token"}
    for ep in found:
        assert static_help(ep) == load_group(ep, root).help, ep.name


def test_the_help_is_not_read_from_source_when_a_callback_may_give_it(tmp_path: Path) -> None:
    from importlib.metadata import EntryPoint

    from cofounder_cli.plugins import static_help

    package = tmp_path / "plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plain.py").write_text('import typer\napp = typer.Typer(help="Plain.")\n')
    (package / "called.py").write_text(
        'import typer\napp = typer.Typer(help="Typer.")\n\n'
        '@app.callback()\ndef cb() -> None:\n    """Callback."""\n'
    )
    (package / "built.py").write_text('import typer\napp = typer.Typer(help="a" + "b")\n')
    sys.path.insert(0, str(tmp_path))
    try:

        def ep(value: str) -> EntryPoint:
            return EntryPoint(name="x", value=value, group="cofounder.commands")

        assert static_help(ep("plugin_pkg.plain:app")) == "Plain."
        assert static_help(ep("plugin_pkg.called:app")) is None
        assert static_help(ep("plugin_pkg.built:app")) is None
        assert static_help(ep("plugin_pkg.missing:app")) is None
        assert "plugin_pkg" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))


def test_the_database_default_the_help_shows_is_the_runtime_s() -> None:
    from cofounder_cli import db
    from cofounder_runtime import settings

    assert db.DEFAULT_DATABASE_URL == settings.DEFAULT_DATABASE_URL
