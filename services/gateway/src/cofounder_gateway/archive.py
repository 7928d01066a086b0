"""Finished builds' log archives, as the gateway reads them (the snapshot service writes them:
docs/adr/0009-log-archive.md): the download, and the events stream of a build whose feed is gone.

A store client is opened per read: archives are read when a feed has expired or for a download,
rarely enough that one more connection costs less than a client shared across requests."""

from __future__ import annotations

from cofounder_snapshots.logarchive import (
    ArchiveEntry,
    LogArchiveSettings,
    archive_key,
    decode_archive,
)
from cofounder_snapshots.store import StoreError

__all__ = ["Archives", "StoreError"]


class Archives:
    """Reads archives from the store the settings name (none: every read finds nothing)."""

    def __init__(self, settings: LogArchiveSettings) -> None:
        self._settings = settings

    async def read(self, *, tier: str, build_id: str) -> bytes | None:
        """The archive's bytes (gzip JSON Lines), None when the build has none (yet)."""
        archive = self._settings.log_archive()
        if archive is None:
            return None
        async with archive:
            return await archive.get(archive_key(tier, build_id))

    async def entries(self, *, tier: str, build_id: str) -> list[ArchiveEntry] | None:
        """The archive's entries, in order; None when there is no archive."""
        data = await self.read(tier=tier, build_id=build_id)
        return None if data is None else decode_archive(data)
