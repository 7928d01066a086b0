"""Log archives are deleted once their tier's retention has passed (the pruning loop's step),
on the folder store: a tier keeps its own number of days, an unknown tier the default tier's."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aioboto3
import msgspec
import pytest

from cofounder_domain.plans import DEFAULT_PLANS
from cofounder_snapshot.archiving import prune_archives
from cofounder_snapshots import logarchive
from cofounder_snapshots.errors import StoreError
from cofounder_snapshots.logarchive import (
    ArchiveEntry,
    FolderArchive,
    S3Archive,
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


async def test_pruning_goes_a_page_at_a_time_and_keeps_what_it_did_when_a_page_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bucket of millions of archives is never listed whole into memory, and a listing that
    # fails halfway (S3 throttling) keeps the deletions of the pages before it.
    monkeypatch.setattr(logarchive, "PAGE", 2)
    archive = FolderArchive(tmp_path)
    old = [await _written(archive, "bootstrapper", f"o{n}", days_ago=40) for n in range(5)]
    pages = archive.pages

    async def failing_after_two(prefix: str) -> AsyncIterator[list[tuple[str, datetime]]]:
        served = 0
        async for page in pages(prefix):
            assert len(page) <= 2
            if served == 2:
                raise StoreError("SlowDown: the listing was throttled")
            served += 1
            yield page

    monkeypatch.setattr(archive, "pages", failing_after_two)
    with pytest.raises(StoreError, match="throttled"):
        await prune_archives(archive, DEFAULT_PLANS, default_tier="bootstrapper")
    left = {key for key, _ in await archive.listed("logs/")}
    assert len(left) == 1  # four deleted, page by page, before the failure
    assert left < set(old)


@pytest.mark.integration
async def test_an_s3_listing_comes_a_page_at_a_time(
    s3_endpoint_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logarchive, "PAGE", 2)
    bucket = f"logs-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("s3", endpoint_url=s3_endpoint_url) as client:
        await client.create_bucket(Bucket=bucket)
    async with S3Archive(bucket, prefix="t", endpoint_url=s3_endpoint_url) as archive:
        for n in range(5):
            assert await archive.put_once(f"logs/bootstrapper/{n}.jsonl.gz", encode_archive([]))
        pages = [page async for page in archive.pages("logs/")]
        assert [len(page) for page in pages] == [2, 2, 1]
        assert sorted(key for page in pages for key, _ in page) == sorted(
            key for key, _ in await archive.listed("logs/")
        )
