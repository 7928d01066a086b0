"""Which store the settings describe, shared by the snapshot service and the agent runner (which
restores snapshots into replacement sandboxes): S3 when ``PROJECT_SNAPSHOT_BUCKET`` is set, a
folder when ``SNAPSHOT_LOCAL_DIR`` is (the embedded default of ``cofounder dev``), else none:
snapshots are off."""

from __future__ import annotations

from cofounder_snapshots.store import LocalStore, S3Store, SnapshotStore

__all__ = ["OFF_REASON", "store_from"]

OFF_REASON = "snapshots are off: PROJECT_SNAPSHOT_BUCKET (or SNAPSHOT_LOCAL_DIR) is not set"


def store_from(
    *,
    bucket: str | None,
    prefix: str = "",
    endpoint_url: str | None = None,
    local_dir: str | None = None,
    attempts: int = 5,
) -> SnapshotStore | None:
    """The configured store (enter it with ``async with`` before use), or None when off."""
    if bucket:
        return S3Store(bucket, prefix=prefix, endpoint_url=endpoint_url, attempts=attempts)
    if local_dir:
        return LocalStore(local_dir)
    return None
