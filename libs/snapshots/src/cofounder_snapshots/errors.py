"""The one error every store raises (snapshots, log archive, screenshots; folder or S3)."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(Exception):
    """The store could not be read or written (after its retries)."""
