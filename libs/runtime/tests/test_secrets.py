"""Secrets never reach a log line, and weak ones never reach production."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from pydantic import Field, SecretStr

from cofounder_runtime.logs import REDACTED, Scrubber, configure_logging
from cofounder_runtime.secrets import entropy_bits, require_strong, secret_values
from cofounder_runtime.settings import RuntimeSettings

STRONG = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


class _Settings(RuntimeSettings):
    api_key: SecretStr = Field(default=SecretStr("sk-ant-0123456789abcdefXYZ"))
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://app:pg-pass-7f3a9c@db.internal:5432/app")
    )
    plain: str = "not-a-secret"


def test_entropy_estimates_rank_real_secrets_above_guessable_ones() -> None:
    assert entropy_bits(STRONG) >= 256  # openssl rand -hex 32
    assert entropy_bits("q3Zp0v1Yk8m+T4rW7xN2bH9cL6sJ5dF0gA1eU8iO3yQ=") >= 256  # -base64 32
    assert entropy_bits("a" * 200) == 0
    assert entropy_bits("ab" * 20) == 80  # 2 bits per character
    assert entropy_bits("x") < 8
    assert entropy_bits("") == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is not set"),
        ("REPLACE_WITH_32_RANDOM_BYTES", "placeholder"),
        ("REPLACE_WITH_A_RANDOM_TOKEN", "placeholder"),
        ("please-change-me-0123456789abcdefghijklmnopqrstuvwxyz", "placeholder"),
        ("dev-only-secret-change-me-0123456789abcdef", "published development value"),
        ("x", "too weak"),
        ("0123456789abcdef0123456789abcdef", "too weak"),  # openssl rand -hex 16: 16 bytes
        ("a" * 100, "too weak"),
    ],
)
def test_weak_secrets_are_refused_naming_the_variable(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as refused:
        require_strong(
            "JWT_SECRET",
            value,
            min_bytes=32,
            known=["dev-only-secret-change-me-0123456789abcdef"],
        )
    assert str(refused.value).startswith("JWT_SECRET ")
    assert "\n" not in str(refused.value)
    if len(value) > 3:
        assert value not in str(refused.value)


def test_a_strong_secret_passes() -> None:
    require_strong("JWT_SECRET", STRONG, min_bytes=32)


def test_secret_values_are_every_secret_setting_and_url_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-0123456789")
    monkeypatch.setenv("REDIS_URL", "redis://default:redis-pass-42@cache:6379/0")
    values = secret_values(_Settings(environment="development"))
    assert "sk-ant-0123456789abcdefXYZ" in values
    assert "postgresql://app:pg-pass-7f3a9c@db.internal:5432/app" in values
    assert "pg-pass-7f3a9c" in values
    assert "redis-pass-42" in values
    assert "aws-secret-0123456789" in values
    assert "not-a-secret" not in values
    assert values == sorted(values, key=len, reverse=True)


def test_a_url_without_a_password_is_no_secret() -> None:
    values = secret_values(_Settings(environment="development"))
    assert not any(v.startswith("redis://127.0.0.1") for v in values)


def test_settings_show_no_secret_in_their_repr() -> None:
    settings = _Settings(environment="development")
    for secret in secret_values(settings):
        assert secret not in repr(settings)
        assert secret not in str(settings.model_dump())


def test_the_scrubber_finds_secrets_as_written_and_escaped() -> None:
    secret = 'q"uo\\te-ünï-0123'
    scrub = Scrubber([secret])
    for line in (
        f"plain {secret} end",
        json.dumps({"error": f"failed: {secret}"}),
        json.dumps({"error": f"failed: {secret}"}, ensure_ascii=False),
        repr({"password": secret}),
    ):
        scrubbed = scrub.scrub(line)
        assert REDACTED in scrubbed, line
        assert "0123" not in scrubbed, scrubbed


def _boom(settings: _Settings) -> None:
    api_key = settings.api_key.get_secret_value()  # a local a traceback could show
    raise RuntimeError(f"the upstream refused {api_key[:3]}…")


@pytest.mark.parametrize("as_json", [True, False])
def test_logged_exceptions_carry_no_locals_and_no_secret(
    as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _Settings(environment="development")
    secrets = secret_values(settings)
    configure_logging(level="INFO", json=as_json, secrets=secrets)
    try:
        try:
            _boom(settings)
        except RuntimeError:
            structlog.get_logger("t").exception("handler failed", dsn=secrets[0])
            logging.getLogger("uvicorn.error").exception(
                "ASGI app failed with %s", settings.api_key.get_secret_value()
            )
        out = capsys.readouterr()
        text = out.out + out.err
        assert "handler failed" in out.out
        assert "ASGI app failed" in out.err
        assert "RuntimeError" in out.out  # tracebacks are kept
        assert "RuntimeError" in out.err
        assert "_boom" in text
        for secret in secrets:
            assert secret not in text
        assert REDACTED in text
        if as_json:
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
            frames = [f for line in lines for e in line.get("exception", []) for f in e["frames"]]
            assert frames, lines
            assert all("locals" not in f for f in frames)
            assert {line["logger"] for line in lines if "logger" in line} == {"uvicorn.error"}
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
