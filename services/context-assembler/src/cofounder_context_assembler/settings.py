"""The context assembler's settings (environment variables, read when constructed)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from cofounder_runtime.settings import DEFAULT_DATABASE_URL, DatabaseUrl, RuntimeSettings

__all__ = ["AssemblerSettings"]


class AssemblerSettings(RuntimeSettings):
    """Redis and consumer settings, plus the database it reads."""

    database_url: DatabaseUrl = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="PostgreSQL URL, postgresql://…, of the system of record; no other "
        "database is supported.",
    )
    database_pool_size: int = Field(
        default=20,
        description="PostgreSQL connections this process keeps at most (per pool): with every "
        "replica of every service, within the server's max_connections.",
    )
