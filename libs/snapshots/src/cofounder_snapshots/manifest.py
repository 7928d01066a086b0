"""One snapshot version: every file's path, hash, size and mode, and what was left out."""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["FileMeta", "Manifest"]


class FileMeta(msgspec.Struct, frozen=True, array_like=True):
    sha256: str
    size: int
    mode: int


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    project_id: str
    build_id: str
    version: int
    created_at: datetime
    #: The ``snapshot.requested`` event it answers: a redelivered request finds its version.
    request_id: str | None = None
    files: dict[str, FileMeta]
    #: Files above the size limit, with their sizes: reported, not silently dropped.
    too_large: dict[str, int] = msgspec.field(default_factory=dict)
    #: What taking it cost, as its ``snapshot.completed`` said: a redelivered request is
    #: answered with the same numbers, so the repeat is the same event (the projection refuses
    #: an event id repeated with other contents). None in manifests of earlier releases.
    bytes_uploaded: int | None = None
    blobs_uploaded: int | None = None
    duration_ms: int | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())
