"""Events of a build's log archive (its feed, kept past Redis: docs/adr/0009-log-archive.md)."""

from __future__ import annotations

from cofounder_contracts.envelope import Event
from cofounder_contracts.units import Count, NonEmpty

__all__ = ["BuildLogArchived"]


class BuildLogArchived(Event, frozen=True, kw_only=True, tag="build.log_archived"):
    """A finished build's event history is stored (gzip JSON Lines, once per build).

    Emitted by the snapshot service after the build's end reached its feed. Not itself an entry
    of the feed: the feed ends with the build, and the archive holds the feed entry for entry.
    ``bucket`` is None for the folder store; ``location`` is ``s3://bucket/key`` or the file's
    path. ``rebuilt``: the Redis feed was gone or incomplete, and the history was rebuilt from
    PostgreSQL (checkpoints, the build's row and its metered calls)."""

    bucket: str | None = None
    key: NonEmpty
    location: NonEmpty
    entries: Count
    bytes: Count
    rebuilt: bool = False
