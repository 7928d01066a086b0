"""Log archives are deleted once their tier's retention has passed (the pruning loop's step),
on the folder store: a tier keeps its own number of days, an unknown tier the default tier's."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from cofounder_domain.plans import DEFAULT_PLANS
from cofounder_snapshot.archiving import prune_archives
from cofounder_snapshots.logarchive import (
    ArchiveEntry,
    FolderArchive,
    archive_key,
    decode_archive,
    encode_archive,
)


async def _written(archive: FolderArchive, tier: str, name: str, days_ago: int) -> str:
    key = archive_key(tier, name)
    assert await archive.put_once(key, encode_archive([]))
    when = (datetime.now(UTC) - timedelta(days=days_ago)).timestamp()
    os.utime(archive.root / key, (when, when))
    return key


async def test_archives_past_their_tier_s_retention_are_deleted(tmp_path: Path) -> None:
    archive = FolderArchive(tmp_path)
    old_free = await _written(archive, "bootstrapper", "a", days_ago=31)
    young_free = await _written(archive, "bootstrapper", "b", days_ago=29)
    old_pro = await _written(archive, "pro", "c", days_ago=200)
    gone_pro = await _written(archive, "pro", "d", days_ago=366)
    unknown = await _written(archive, "enterprise", "e", days_ago=31)
    deleted = await prune_archives(archive, DEFAULT_PLANS, default_tier="bootstrapper")
    assert deleted == 3
    left = {key for key, _ in await archive.listed("logs/")}
    assert left == {young_free, old_pro}
    assert not {old_free, gone_pro, unknown} & left


async def test_an_archive_is_written_once_and_reads_back_entry_for_entry(tmp_path: Path) -> None:
    archive = FolderArchive(tmp_path)
    entries = [
        ArchiveEntry(
            id="1-0", type="build.status_changed", event_id="e1", data=msgspec.Raw(b'{"a":1}')
        ),
        ArchiveEntry(id="1-1", type="build.completed", event_id="e2", data=msgspec.Raw(b'{"b":2}')),
    ]
    data = encode_archive(entries)
    assert data == encode_archive(entries)  # no time in the gzip header
    assert await archive.put_once("logs/pro/x.jsonl.gz", data)
    assert not await archive.put_once("logs/pro/x.jsonl.gz", encode_archive(entries[:1]))
    stored = await archive.get("logs/pro/x.jsonl.gz")
    assert stored == data
    assert [(e.id, e.type, e.event_id, bytes(e.data)) for e in decode_archive(stored)] == [
        (e.id, e.type, e.event_id, bytes(e.data)) for e in entries
    ]
    assert [key for key, _ in await archive.listed("logs/")] == ["logs/pro/x.jsonl.gz"]
