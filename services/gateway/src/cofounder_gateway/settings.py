"""The gateway's settings (environment variables, read when constructed)."""

from __future__ import annotations

from pydantic import Field, model_validator

from cofounder_budgeting import PlanSettings
from cofounder_runtime.settings import RuntimeSettings

__all__ = ["DEV_SECRET", "GatewaySettings"]

#: The development signing secret. Refused unless ``ENVIRONMENT=development``.
DEV_SECRET = "dev-only-secret-change-me-0123456789abcdef"  # noqa: S105 - a documented placeholder


class GatewaySettings(RuntimeSettings, PlanSettings):
    """HTTP, auth, limits and the database, on top of the shared runtime settings."""

    environment: str = Field(default="development", description="development or production.")
    database_url: str = Field(
        default="sqlite+aiosqlite:///.cofounder/cofounder.db",
        description="PostgreSQL or SQLite URL of the system of record.",
    )
    database_pool_size: int = Field(
        default=20,
        description="PostgreSQL connections this process keeps at most (per pool): with every "
        "replica of every service, within the server's max_connections.",
    )
    host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    port: int = Field(default=8000, description="HTTP port.")
    jwt_secret: str = Field(default=DEV_SECRET, description="HS256 secret of bearer tokens.")
    admin_token: str = Field(
        default="dev-admin-token", description="Bearer token of the admin API."
    )
    autonomous_agent: bool = Field(
        default=True, description="Accept builds (false: 503 autonomous_agent_off)."
    )
    write_pool_size: int = Field(
        default=20, description="PostgreSQL connections for creating builds (asyncpg pool)."
    )
    max_body_bytes: int = Field(default=64 * 1024, description="Larger request bodies get 413.")
    tier_max_concurrent_builds: dict[str, int] = Field(
        default={"bootstrapper": 2, "founder": 5, "pro": 10},
        description="Builds a user of each tier may have queued or running at once.",
    )
    build_feed_max_len: int = Field(default=2_000, description="Entries kept per build feed.")
    sse_max_connections: int = Field(
        default=1_000,
        description="Live event streams one process serves at once (one Redis connection each); "
        "beyond it, 429 too_many_streams.",
    )
    sse_max_streams_per_user: int = Field(
        default=10, description="Live event streams one founder may hold open at once (429)."
    )
    outbox_poll_ms: int = Field(default=100, description="Relay poll period when idle.")
    serve_api: bool = Field(default=True, description="Serve the REST API in this process.")
    run_relay: bool = Field(default=True, description="Run the outbox relay in this process.")
    run_projection: bool = Field(
        default=True,
        description="Run the status projection consumers in this process. Scale the API and "
        "the projection separately by turning one off in each deployment.",
    )

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> GatewaySettings:
        if self.environment != "development" and self.jwt_secret == DEV_SECRET:
            raise ValueError("JWT_SECRET must be set outside development")
        if self.environment != "development" and self.admin_token == "dev-admin-token":  # noqa: S105
            raise ValueError("ADMIN_TOKEN must be set outside development")
        return self
