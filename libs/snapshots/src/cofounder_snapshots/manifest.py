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

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())
