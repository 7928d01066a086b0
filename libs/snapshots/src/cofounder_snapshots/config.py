"""Which store the settings describe, shared by the snapshot service, the agent runner (which
restores snapshots into replacement sandboxes) and ``cofounder snapshots``: S3 when
``PROJECT_SNAPSHOT_BUCKET`` is set, a folder when ``SNAPSHOT_LOCAL_DIR`` is (the embedded default
of ``cofounder dev``), else none: snapshots are off."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from cofounder_snapshots.store import LocalStore, S3Store, SnapshotStore

__all__ = ["OFF_REASON", "SnapshotStoreSettings"]

OFF_REASON = "snapshots are off: PROJECT_SNAPSHOT_BUCKET (or SNAPSHOT_LOCAL_DIR) is not set"


class SnapshotStoreSettings(BaseSettings):
    """Where snapshots live, read alike by every process that writes or reads them.
    ``S3_ENDPOINT_URL`` and the AWS credentials are shared with the screenshots and the log
    archives."""

    project_snapshot_bucket: str | None = Field(
        default=None, description="S3 bucket of snapshots; unset (and no SNAPSHOT_LOCAL_DIR): off."
    )
    snapshot_prefix: str = Field(default="", description="Key prefix inside the bucket.")
    snapshot_local_dir: str | None = Field(
        default=None, description="A folder store instead of S3 (the embedded default)."
    )
    snapshot_attempts: int = Field(
        default=5, ge=1, description="Attempts per S3 call (botocore's retries)."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, moto); default: AWS."
    )

    def snapshot_store(self) -> SnapshotStore | None:
        """The configured store (enter it with ``async with`` before use), or None when off."""
        if self.project_snapshot_bucket:
            return S3Store(
                self.project_snapshot_bucket,
                prefix=self.snapshot_prefix,
                endpoint_url=self.s3_endpoint_url,
                attempts=self.snapshot_attempts,
            )
        if self.snapshot_local_dir:
            return LocalStore(self.snapshot_local_dir)
        return None
