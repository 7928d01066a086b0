"""The snapshot service's settings (environment variables, read when constructed)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from cofounder_runtime.settings import RuntimeSettings

__all__ = ["SnapshotSettings"]


class SnapshotSettings(RuntimeSettings):
    """Where snapshots go, which sandboxes they are read from, and how many are kept."""

    project_snapshot_bucket: str | None = Field(
        default=None, description="S3 bucket of snapshots; unset (and no SNAPSHOT_LOCAL_DIR): off."
    )
    snapshot_prefix: str = Field(default="", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, moto); default: AWS."
    )
    snapshot_local_dir: str | None = Field(
        default=None, description="A folder store instead of S3 (the embedded default)."
    )
    snapshot_keep_versions: int = Field(default=10, description="Versions kept per build.")
    snapshot_max_file_bytes: int = Field(
        default=50 * 1024 * 1024, description="Files above this size are left out (reported)."
    )
    snapshot_concurrency: int = Field(default=16, description="Blob transfers at once.")
    snapshot_attempts: int = Field(default=5, description="Attempts per S3 call (botocore).")
    sandbox_root: str = Field(
        default=".cofounder/sandboxes", description="Local sandboxes' folder (the runner's)."
    )
    e2b_api_key: SecretStr | None = Field(default=None, description="E2B API key.")
