"""One snapshot version: every file's path, hash, size and mode, and what was left out."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

__all__ = ["ANSWERED_KEPT", "FileMeta", "Manifest"]

#: Requests a manifest remembers (its own and those of the versions before it). Far more than a
#: build has in flight: a request is answered again only while its entry is pending, or when the
#: reconciler repeats the latest one.
ANSWERED_KEPT: Final = 64


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
    #: The requests the build's latest versions answered, this one's included (request id →
    #: version, at most :data:`ANSWERED_KEPT`), carried from each version to the next: a
    #: request answered again after a newer version was taken finds its own version in the
    #: latest manifest, which is read anyway. Empty in manifests of earlier releases.
    answered: dict[str, int] = msgspec.field(default_factory=dict)

    def answered_by(self, request_id: str) -> int | None:
        """The version that answered ``request_id``, if one of the last few did."""
        if self.request_id == request_id:  # a manifest of an earlier release has no answered
            return self.version
        return self.answered.get(request_id)

    def answered_next(self, request_id: str | None, version: int) -> dict[str, int]:
        """The ``answered`` of the version after this one."""
        kept = dict(self.answered)
        if self.request_id is not None:  # held already, unless of an earlier release
            kept.setdefault(self.request_id, self.version)
        if request_id is not None:
            kept[request_id] = version
        return dict(list(kept.items())[-ANSWERED_KEPT:])

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())
