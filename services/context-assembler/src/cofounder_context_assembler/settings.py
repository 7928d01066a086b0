"""The context assembler's settings (environment variables, read when constructed)."""

from __future__ import annotations

from cofounder_db.settings import DatabaseSettings
from cofounder_runtime.settings import RuntimeSettings

__all__ = ["AssemblerSettings"]


class AssemblerSettings(RuntimeSettings, DatabaseSettings):
    """Redis and consumer settings, plus the database it reads."""
