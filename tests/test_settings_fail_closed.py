"""Every service refuses to start on settings that are missing, weak or published, with one line
per problem on stderr and exit status 2: never a traceback, never the offending value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cofounder_gateway.settings import DEV_ADMIN_TOKEN, DEV_SECRET

pytestmark = pytest.mark.e2e

SERVICES = ("gateway", "context-assembler", "agent-runner", "budget", "snapshot")
STRONG_JWT = "5b0f5e0c9d6a4e1fa3c27b8d94e6f1a0c3d5e7f9b1a2c4d6e8f0a1b3c5d7e9f1"
STRONG_ADMIN = "c2f4e6a8b0d1f3e5a7c9b2d4f6e8a0c1b3d5e7f9"
# Nothing is reachable here: a process that got past its settings would fail on connecting, with
# another status than 2 and after much longer.
UNREACHABLE = {"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": "postgresql://127.0.0.1:1/x"}


def _serve(service: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"ENVIRONMENT", "JWT_SECRET",
            "ADMIN_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "E2B_API_KEY"}}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "cofounder_cli", "serve", service],
        env={**base, **UNREACHABLE, "ANTHROPIC_BASE_URL": "http://127.0.0.1:1", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line_each(result: subprocess.CompletedProcess[str], service: str) -> list[str]:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines, result
    assert all(line.startswith(f"error: {service}: ") for line in lines), lines
    return lines


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_starts_without_an_explicit_environment(service: str) -> None:
    lines = _one_line_each(_serve(service), service)
    assert lines == [
        f"error: {service}: ENVIRONMENT: is not set (development for a local run, production "
        "with real secrets; there is no default)"
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_an_unknown_environment_is_refused(service: str) -> None:
    [line] = _one_line_each(_serve(service, ENVIRONMENT="prod"), service)
    assert line.startswith(f"error: {service}: ENVIRONMENT: Input should be 'development'")


@pytest.mark.parametrize(
    ("jwt", "admin", "expected"),
    [
        # Unset: said so, not refused as the development default it would fall back to.
        (None, None, ["JWT_SECRET is not set", "ADMIN_TOKEN is not set"]),
        (None, STRONG_ADMIN, ["JWT_SECRET is not set"]),
        (STRONG_JWT, None, ["ADMIN_TOKEN is not set"]),
        (DEV_SECRET, DEV_ADMIN_TOKEN, ["JWT_SECRET is the published", "ADMIN_TOKEN is the pub"]),
        (
            "REPLACE_WITH_32_RANDOM_BYTES",
            "REPLACE_WITH_A_RANDOM_TOKEN",
            ["JWT_SECRET is still a placeholder", "ADMIN_TOKEN is still a placeholder"],
        ),
        ("x", STRONG_ADMIN, ["JWT_SECRET is too weak"]),
        ("", STRONG_ADMIN, ["JWT_SECRET is not set"]),
        (STRONG_JWT, "0123456789abcdef", ["ADMIN_TOKEN is too weak"]),
    ],
)
def test_the_gateway_refuses_weak_or_published_secrets_outside_development(
    jwt: str | None, admin: str | None, expected: list[str]
) -> None:
    env = {"ENVIRONMENT": "production"}
    if jwt is not None:
        env["JWT_SECRET"] = jwt
    if admin is not None:
        env["ADMIN_TOKEN"] = admin
    lines = _one_line_each(_serve("gateway", **env), "gateway")
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(f"error: gateway: {start}"), line
        assert "openssl rand" in line
        for secret in (jwt, admin):
            if secret and len(secret) > 3:
                assert secret not in line


def test_the_runner_needs_a_model_to_call() -> None:
    result = _serve("agent-runner", ENVIRONMENT="development", ANTHROPIC_BASE_URL="")
    [line] = _one_line_each(result, "agent-runner")
    assert line.startswith("error: agent-runner: ANTHROPIC_API_KEY is not set")


def test_the_runner_refuses_unisolated_sandboxes_in_production() -> None:
    result = _serve("agent-runner", ENVIRONMENT="production", SANDBOX_ISOLATION="unsafe-none")
    [line] = _one_line_each(result, "agent-runner")
    assert "SANDBOX_ISOLATION=unsafe-none is for ENVIRONMENT=development only" in line


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "snapshot"])
def test_a_sqlite_database_url_is_refused(service: str) -> None:
    """PostgreSQL is the only database: the old embedded default is refused, saying so."""
    url = "sqlite+aiosqlite:///.cofounder/cofounder.db"
    result = _serve(service, ENVIRONMENT="development", DATABASE_URL=url)
    assert _one_line_each(result, service) == [
        f"error: {service}: DATABASE_URL must be a PostgreSQL URL (postgresql://...); "
        "SQLite is no longer supported"
    ]
    assert url not in result.stderr


def test_strong_secrets_pass_the_settings_check() -> None:
    """The same process with good settings gets past them (and fails later, on connecting)."""
    result = _serve(
        "gateway", ENVIRONMENT="production", JWT_SECRET=STRONG_JWT, ADMIN_TOKEN=STRONG_ADMIN
    )
    assert result.returncode != 2, result.stderr
    assert "error: gateway:" not in result.stderr
    for secret in (STRONG_JWT, STRONG_ADMIN):
        assert secret not in result.stdout + result.stderr
