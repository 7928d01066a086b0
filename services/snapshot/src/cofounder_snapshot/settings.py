"""The snapshot service's settings (environment variables, read when constructed)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from cofounder_budgeting.settings import PlanSettings
from cofounder_db.settings import DatabaseSettings
from cofounder_runtime.settings import RuntimeSettings
from cofounder_snapshots.config import SnapshotStoreSettings
from cofounder_snapshots.logarchive import LogArchiveSettings

__all__ = ["SnapshotSettings"]


class SnapshotSettings(
    RuntimeSettings, DatabaseSettings, PlanSettings, SnapshotStoreSettings, LogArchiveSettings
):
    """Where snapshots (:class:`~cofounder_snapshots.config.SnapshotStoreSettings`) and build log
    archives go, which sandboxes they are read from, and how long they are kept (archives: per
    tier, ``LOG_ARCHIVE_DAYS``). The database is read to rebuild a build's history whose feed
    Redis lost, and for the build's tier."""

    snapshot_keep_versions: int = Field(default=10, description="Versions kept per build.")
    snapshot_max_file_bytes: int = Field(
        default=50 * 1024 * 1024, description="Files above this size are left out (reported)."
    )
    snapshot_concurrency: int = Field(default=16, description="Blob transfers at once.")
    sandbox_root: str = Field(
        default=".cofounder/sandboxes", description="Local sandboxes' folder (the runner's)."
    )
    e2b_api_key: SecretStr | None = Field(default=None, description="E2B API key.")
    log_archive_settle_s: float = Field(
        default=2.0,
        description="A finished build's feed is archived once it has had no new entry for "
        "this long (late entries, the final snapshot's answer among them, are kept).",
    )
    log_archive_wait_s: float = Field(
        default=60.0,
        description="How long the end of a build may take to reach its feed before the feed "
        "is taken as lost and the history is rebuilt from PostgreSQL (unless the gateway's "
        "projection is behind), and how long after it the answer to a completed build's final "
        "snapshot is waited for.",
    )
    log_archive_prune_interval_s: float = Field(
        default=3_600.0, description="How often archives past their tier's retention are deleted."
    )
