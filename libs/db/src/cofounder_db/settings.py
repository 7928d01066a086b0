"""The database settings every service with a database reads alike, and its engine."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_db.engine import create_engine
from cofounder_runtime.settings import DEFAULT_DATABASE_URL, DatabaseUrl

__all__ = ["DatabaseSettings"]


class DatabaseSettings(BaseSettings):
    """``DATABASE_URL`` and the pool's size, mixed into a service's settings."""

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

    def create_engine(self, *, pre_ping: bool = True) -> AsyncEngine:
        """An engine on ``DATABASE_URL`` with a pool of ``DATABASE_POOL_SIZE`` (see
        :func:`cofounder_db.engine.create_engine` for ``pre_ping``)."""
        return create_engine(
            self.database_url.get_secret_value(),
            pool_size=self.database_pool_size,
            pre_ping=pre_ping,
        )
