"""The gateway's settings (environment variables, read when constructed)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from cofounder_budgeting import PlanSettings
from cofounder_db.settings import DatabaseSettings
from cofounder_gateway.reconcile.reconciler import ReconcilerConfig
from cofounder_runtime.retention import ProcessedEventsRetentionSettings
from cofounder_runtime.secrets import require_strong
from cofounder_runtime.settings import RuntimeSettings
from cofounder_snapshots.logarchive import LogArchiveSettings
from cofounder_snapshots.screenshots import ScreenshotSettings

__all__ = ["DEV_ADMIN_TOKEN", "DEV_SECRET", "GatewaySettings"]

#: The development signing secret. Refused unless ``ENVIRONMENT=development``.
DEV_SECRET = "dev-only-secret-change-me-0123456789abcdef"  # noqa: S105 - a documented placeholder
#: The development admin token. Refused unless ``ENVIRONMENT=development``.
DEV_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105 - a documented placeholder


class GatewaySettings(
    RuntimeSettings,
    DatabaseSettings,
    PlanSettings,
    ProcessedEventsRetentionSettings,
    LogArchiveSettings,
    ScreenshotSettings,
):
    """HTTP, auth, limits and the database, on top of the shared runtime settings and the plans
    (``TIER_MAX_CONCURRENT_BUILDS`` among them: :class:`~cofounder_budgeting.PlanSettings`)."""

    host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    port: int = Field(default=8000, description="HTTP port.")
    jwt_secret: SecretStr = Field(
        default=SecretStr(DEV_SECRET),
        description="HS256 secret of bearer tokens: outside development at least 32 random bytes "
        "(`openssl rand -hex 32`).",
    )
    admin_token: SecretStr = Field(
        default=SecretStr(DEV_ADMIN_TOKEN),
        description="Bearer token of the admin API: outside development at least 24 random bytes "
        "(`openssl rand -hex 24`).",
    )
    autonomous_agent: bool = Field(
        default=True, description="Accept builds (false: 503 autonomous_agent_off)."
    )
    stream_token_ttl_s: int = Field(
        default=300,
        ge=5,
        le=3_600,
        description="Lifetime of a stream token (POST /v1/stream-tokens), the build page's "
        "credential for one build's event stream (?token=); checked when a stream opens, "
        "renewed by the page.",
    )
    login_code_ttl_s: int = Field(
        default=600,
        ge=10,
        le=3_600,
        description="Lifetime of a one-time login code (POST /v1/login-codes), which the build "
        "page's URL carries in its fragment and exchanges for a page session token.",
    )
    page_session_ttl_s: int = Field(
        default=8 * 3_600,
        ge=60,
        le=7 * 86_400,
        description="Lifetime of the bearer token a login code is exchanged for (the build "
        "page keeps it in the tab's sessionStorage).",
    )
    write_pool_size: int = Field(
        default=20, description="PostgreSQL connections for creating builds (asyncpg pool)."
    )
    max_body_bytes: int = Field(default=64 * 1024, description="Larger request bodies get 413.")
    build_feed_max_len: int = Field(default=2_000, description="Entries kept per build feed.")
    feed_ttl_after_end_s: int = Field(
        default=86_400,
        ge=1,
        description="A build's feed is deleted this long after the build ended (completed, "
        "failed or cancelled); the build's row keeps its outcome.",
    )
    feed_idle_ttl_s: int = Field(
        default=7 * 86_400,
        ge=1,
        description="A build's feed with no new entry for this long is deleted, ended or not (a "
        "build whose end never reached the gateway leaves nothing behind); each entry renews it. "
        "Above FEED_TTL_AFTER_END_S, and well above a live build's longest silence (a sleeping "
        "build wakes daily).",
    )
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
    run_reconciler: bool = Field(
        default=True,
        description="Run the reconciler in this process: it re-publishes what Redis lost of "
        "unfinished builds, from PostgreSQL. Safe in every replica: one is active at a time "
        "(a lease), the others stand by.",
    )
    reconcile_interval_s: float = Field(
        default=15.0, gt=0, description="Seconds between two reconciler passes."
    )
    reconcile_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a build's stage must have lasted, with no trace of its work in "
        "Redis, before the reconciler calls its event lost (it also waits for a second pass "
        "to agree).",
    )
    reconcile_batch: int = Field(
        default=500,
        gt=0,
        description="Builds one pass compares, of the unfinished and of the lately finished "
        "each; the next pass goes on from there.",
    )
    reconcile_max_repairs: int = Field(
        default=100, gt=0, description="Events one reconciler pass re-publishes at most."
    )
    reconcile_lookback_s: int = Field(
        default=86_400,
        gt=0,
        description="How long after its end a build is still looked at (its last snapshot "
        "request, a cancel its runner may have missed).",
    )
    reconcile_scan_limit: int = Field(
        default=10_000,
        gt=0,
        description="Entries of one stream a pass reads to see what is in flight; a longer "
        "backlog makes the pass wait rather than repair builds on that stream.",
    )

    def reconciler_config(self) -> ReconcilerConfig:
        """The reconciler's settings."""
        return ReconcilerConfig(
            interval_s=self.reconcile_interval_s,
            grace=timedelta(seconds=self.reconcile_grace_s),
            batch=self.reconcile_batch,
            max_repairs=self.reconcile_max_repairs,
            lookback=timedelta(seconds=self.reconcile_lookback_s),
            scan_limit=self.reconcile_scan_limit,
        )

    @model_validator(mode="before")
    @classmethod
    def _unset_secrets_are_unset(cls, data: Any) -> Any:
        """Outside development, a secret that is not set is checked as the empty value it is,
        so the refusal says "is not set" (not that it is the development default it falls back
        to, which only development uses)."""
        if isinstance(data, dict) and data.get("environment") not in (None, "development"):
            return {"jwt_secret": "", "admin_token": "", **data}
        return data

    @field_validator("jwt_secret")
    @classmethod
    def _strong_jwt_secret(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("environment", "development") != "development":
            require_strong("JWT_SECRET", value.get_secret_value(), min_bytes=32, known=[DEV_SECRET])
        return value

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("environment", "development") != "development":
            require_strong(
                "ADMIN_TOKEN", value.get_secret_value(), min_bytes=24, known=[DEV_ADMIN_TOKEN]
            )
        return value
