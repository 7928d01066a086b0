"""Settings every service shares, read from the environment when (and only when) constructed.

Each service subclasses :class:`RuntimeSettings` with its own fields; its composition root builds
one instance with :func:`load_settings` and passes it down. Nothing here reads the environment at
import time.

Settings fail closed: ``ENVIRONMENT`` has no default (development is a choice, not what an unset
variable means), secrets are :class:`~pydantic.SecretStr` and are checked for strength outside
development (:mod:`cofounder_runtime.secrets`), and a process whose settings do not validate
exits with status 2 and one line per problem, never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from typing import Annotated, Final, Literal, NoReturn, TypeVar

from pydantic import AfterValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cofounder_runtime.options import ConsumerOptions

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_REDIS_URL",
    "DatabaseUrl",
    "Environment",
    "RuntimeSettings",
    "default_consumer_name",
    "exit_on_invalid",
    "load_settings",
    "postgresql_url",
]

_S = TypeVar("_S", bound=BaseSettings)

#: The settings named ``CONSUMER_<OPTION>`` are options of :class:`ConsumerOptions`.
_CONSUMER_PREFIX: Final = "consumer_"

#: ``REDIS_URL`` when unset: the local server's database 0.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: ``DATABASE_URL`` when unset: the local PostgreSQL server's ``cofounder`` database.
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cofounder"

#: The URL schemes of PostgreSQL on the asyncpg driver: the only database.
_POSTGRESQL_SCHEMES: Final = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})


def postgresql_url(url: str) -> str:
    """``url`` when it is a PostgreSQL URL; else a :class:`ValueError` that says what is wanted.

    The message never holds the URL: it may hold a password."""
    scheme, found, _ = url.partition("://")
    if found and scheme in _POSTGRESQL_SCHEMES:
        return url
    no_longer = "; SQLite is no longer supported" if scheme.lower().startswith("sqlite") else ""
    raise ValueError(f"DATABASE_URL must be a PostgreSQL URL (postgresql://...){no_longer}")


def _postgresql_secret(value: SecretStr) -> SecretStr:
    postgresql_url(value.get_secret_value())
    return value


#: A service's ``DATABASE_URL``: a secret (it may hold a password), refused at start-up unless it
#: is PostgreSQL's.
DatabaseUrl = Annotated[SecretStr, AfterValidator(_postgresql_secret)]

#: Where a process runs. Anything but development holds production's rules (real secrets, no
#: unisolated sandboxes).
Environment = Literal["development", "staging", "production"]


def default_consumer_name() -> str:
    """``<host>-<pid>``: unique per process, stable for its life (Kubernetes pod names are hosts).

    Set ``CONSUMER_NAME`` to a stable name (a StatefulSet ordinal) to have a restarted process
    re-read its own pending entries at once instead of waiting for another's janitor.
    """
    return f"{socket.gethostname()}-{os.getpid()}"


class RuntimeSettings(BaseSettings):
    """Redis, consumer behaviour, logs and metrics. Environment variables are upper-case names."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    environment: Environment = Field(
        description="development, staging or production; required (no default). Outside "
        "development secrets must be strong and set, and unsafe development switches are refused.",
    )
    redis_url: SecretStr = Field(
        default=SecretStr(DEFAULT_REDIS_URL),
        description="Redis (or Valkey) URL (secret: it may hold a password).",
    )
    consumer_name: str = Field(
        default_factory=default_consumer_name,
        description="This process's name in its consumer groups.",
    )
    consumer_concurrency: int = Field(
        default=256, description="Handlers running at once per stream."
    )
    consumer_batch_size: int = Field(default=256, description="XREADGROUP COUNT.")
    consumer_block_ms: int = Field(default=1_000, description="XREADGROUP BLOCK.")
    consumer_min_idle_ms: int = Field(
        default=30_000, description="Idle time after which an entry is claimed."
    )
    consumer_max_deliveries: int = Field(default=5, description="Deliveries before dead-lettering.")
    consumer_retry_base_ms: int = Field(default=100, description="First retry backoff.")
    consumer_retry_max_ms: int = Field(default=5_000, description="Longest retry backoff.")
    consumer_outage_patience_ms: int = Field(
        default=300_000,
        description="How long a handler failing because PostgreSQL or Redis is unavailable is "
        "retried without its failures counting toward CONSUMER_MAX_DELIVERIES (0: counted).",
    )
    consumer_shutdown_grace_s: float = Field(
        default=30.0, description="Time in-flight work gets on SIGTERM."
    )
    log_level: str = Field(default="INFO", description="Log level name.")
    log_json: bool = Field(default=True, description="JSON logs (false: human-readable console).")
    metrics_port: int | None = Field(
        default=None, description="Serve Prometheus /metrics on this port."
    )

    @property
    def development(self) -> bool:
        """Whether this process runs with development's relaxed rules."""
        return self.environment == "development"

    def consumer_options(self, *, max_age_ms: int | None = None) -> ConsumerOptions:
        """The consumer options these settings describe: each ``CONSUMER_<OPTION>`` setting is
        the option of that name (:class:`ConsumerOptions`; those without a setting keep their
        defaults)."""
        options = {f.name for f in dataclasses.fields(ConsumerOptions)}
        values = {
            option: getattr(self, name)
            for name in type(self).model_fields
            if (option := name.removeprefix(_CONSUMER_PREFIX)) != name and option in options
        }
        return ConsumerOptions(**values, max_age_ms=max_age_ms)


def load_settings(cls: type[_S], *, service: str) -> _S:
    """``cls()`` from the environment; on invalid settings, one line per problem on stderr and
    exit status 2 (see :func:`exit_on_invalid`)."""
    try:
        return cls()
    except ValidationError as error:
        exit_on_invalid(error, service=service)


def exit_on_invalid(error: ValidationError, *, service: str) -> NoReturn:
    """Print ``error: <service>: <VARIABLE>: <problem>`` per problem and exit with status 2.

    The offending values are never printed: a mistyped secret is still a secret.
    """
    for problem in error.errors(include_input=False, include_url=False):
        variable = "_".join(str(part) for part in problem["loc"]).upper()
        message = str(problem["msg"]).removeprefix("Value error, ")
        if problem["type"] == "missing":
            message = "is not set" + _MISSING_HINTS.get(variable, "")
        where = f"{variable}: " if variable and not message.startswith(variable) else ""
        print(f"error: {service}: {where}{message}", file=sys.stderr)
    raise SystemExit(2)


_MISSING_HINTS = {
    "ENVIRONMENT": " (development for a local run, production with real secrets; there is no "
    "default)",
}
