"""A finished build's log archive: its feed, entry for entry, as gzip JSON Lines.

Layout (under an optional prefix, in a bucket or a folder)::

    logs/<tier>/<build>.jsonl.gz      one object per build, written once, never rewritten

The tier is the build row's (fixed when the build was made): retention is per tier, and a
prefix per tier lets an operator replace the pruning loop (which lists a page at a time) with an
S3 lifecycle rule on ``logs/<tier>/`` (docs/adr/0009-log-archive.md).

Each line is one feed entry: its stream id (the SSE id), its type, its event id and its data
(the event's JSON, as the feed holds it), plus ``source``: ``feed`` when read from the Redis
feed, ``postgres`` when rebuilt. The gzip header carries no time or name, so the same entries
always compress to the same bytes.

Written once: the folder store links a finished temporary file into place (``link`` fails when
the name exists), the S3 store writes with ``If-None-Match: *`` (S3's conditional write). A
second archiving of a build writes nothing and reads back the first.
"""

from __future__ import annotations

import asyncio
import gzip
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Literal, Protocol, Self

import msgspec
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field
from pydantic_settings import BaseSettings

from cofounder_snapshots.errors import StoreError
from cofounder_snapshots.folder import Folder, write_atomically
from cofounder_snapshots.s3 import S3Bucket

__all__ = [
    "ArchiveEntry",
    "FolderArchive",
    "LogArchive",
    "LogArchiveSettings",
    "S3Archive",
    "archive_key",
    "decode_archive",
    "encode_archive",
    "log_archive_from",
]

#: S3 answers a conditional write that found the key with one of these.
_EXISTS: Final = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_FAILURES: Final = (ClientError, BotoCoreError, OSError)
#: Keys a listing page holds (S3's own most).
PAGE: Final = 1_000


class ArchiveEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One feed entry. ``data`` is the event's JSON as the feed holds it (kept raw, so a replay
    sends the very bytes the live stream sent)."""

    id: str
    type: str
    event_id: str
    data: msgspec.Raw
    source: Literal["feed", "postgres"] = "feed"


_ENCODE: Final = msgspec.json.Encoder()
_DECODE: Final = msgspec.json.Decoder(ArchiveEntry)


def encode_archive(entries: Iterable[ArchiveEntry]) -> bytes:
    """The archive's bytes: one JSON line per entry, gzip without a time or a name."""
    lines = b"".join(_ENCODE.encode(e) + b"\n" for e in entries)
    return gzip.compress(lines, compresslevel=6, mtime=0)


def decode_archive(data: bytes) -> list[ArchiveEntry]:
    """The entries of an archive's bytes, in order."""
    text = gzip.decompress(data)
    return [_DECODE.decode(line) for line in text.splitlines() if line.strip()]


def archive_key(tier: str, build_id: str) -> str:
    """The archive's key (without the store's prefix)."""
    return f"logs/{tier}/{build_id}.jsonl.gz"


class LogArchiveSettings(BaseSettings):
    """Where archives live, read alike by the snapshot service (writes, prunes) and the gateway
    (serves). ``S3_ENDPOINT_URL`` and the AWS credentials are the snapshots' own."""

    log_archive_bucket: str | None = Field(
        default=None,
        description="S3 bucket of finished builds' log archives; unset (and no "
        "LOG_ARCHIVE_DIR): builds are not archived.",
    )
    log_archive_prefix: str = Field(default="", description="Key prefix inside the bucket.")
    log_archive_dir: str | None = Field(
        default=None, description="A folder for log archives instead of S3 (the embedded default)."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, moto); default: AWS."
    )

    def log_archive(self) -> LogArchive | None:
        """The configured store (enter it with ``async with``), None when archiving is off."""
        return log_archive_from(
            bucket=self.log_archive_bucket,
            prefix=self.log_archive_prefix,
            endpoint_url=self.s3_endpoint_url,
            local_dir=self.log_archive_dir,
        )


class LogArchive(Protocol):
    """What archiving, serving and pruning need from a store (used inside ``async with``)."""

    description: str

    @property
    def bucket(self) -> str | None:
        """The bucket, None for a folder."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def location(self, key: str) -> str:
        """Where ``key`` is, for people: ``s3://bucket/prefix/key`` or the file's path."""
        ...

    def full_key(self, key: str) -> str:
        """``key`` with the store's prefix (the object's key in the bucket)."""
        ...

    async def put_once(self, key: str, data: bytes) -> bool:
        """Write ``data`` unless ``key`` exists; False (nothing written) when it does."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The bytes of ``key``, None when there is no such archive."""
        ...

    async def listed(self, prefix: str) -> list[tuple[str, datetime]]:
        """The keys under ``prefix`` (without the store's prefix) and when each was written."""
        ...

    def pages(self, prefix: str) -> AsyncIterator[list[tuple[str, datetime]]]:
        """:meth:`listed`, a page (up to :data:`PAGE` keys) at a time: a bucket of millions of
        archives is never held whole."""
        ...

    async def delete(self, keys: Sequence[str]) -> None: ...


class FolderArchive(Folder):
    """Archives in a folder (``cofounder dev``'s default)."""

    bucket: str | None = None

    def location(self, key: str) -> str:
        return str(self._path(key))

    def full_key(self, key: str) -> str:
        return key

    async def put_once(self, key: str, data: bytes) -> bool:
        # A hard link: atomic, and refused when the archive exists.
        return await asyncio.to_thread(write_atomically, self._path(key), data, replace=False)

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            return None

    async def pages(self, prefix: str) -> AsyncIterator[list[tuple[str, datetime]]]:
        listed = await self.listed(prefix)  # a development folder: listed whole
        for start in range(0, len(listed), PAGE):
            yield listed[start : start + PAGE]

    async def listed(self, prefix: str) -> list[tuple[str, datetime]]:
        base = self._path(prefix.rstrip("/"))

        def walk() -> list[tuple[str, datetime]]:
            return [
                (
                    p.relative_to(self._normal_root).as_posix(),
                    datetime.fromtimestamp(p.stat().st_mtime, UTC),
                )
                for p in base.rglob("*.jsonl.gz")
            ]

        return await asyncio.to_thread(walk) if base.is_dir() else []

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)


class S3Archive(S3Bucket):
    """Archives in an S3 bucket (``endpoint_url`` for MinIO, moto or another S3 API)."""

    def __init__(
        self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None, attempts: int = 5
    ) -> None:
        super().__init__(
            bucket, what="S3 archive", prefix=prefix, endpoint_url=endpoint_url, attempts=attempts
        )

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.full_key(key)}"

    async def put_once(self, key: str, data: bytes) -> bool:
        try:
            await self.client.put_object(
                Bucket=self.bucket,
                Key=self.full_key(key),
                Body=io.BytesIO(data),
                ContentLength=len(data),
                ContentType="application/x-ndjson",
                ContentEncoding="gzip",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _EXISTS:
                return False
            raise StoreError(f"could not write {key} to {self.description}: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise StoreError(f"could not write {key} to {self.description}: {exc}") from exc
        return True

    async def get(self, key: str) -> bytes | None:
        return await self.read(key)

    async def listed(self, prefix: str) -> list[tuple[str, datetime]]:
        return [item async for page in self.pages(prefix) for item in page]

    async def pages(self, prefix: str) -> AsyncIterator[list[tuple[str, datetime]]]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(
                Bucket=self.bucket,
                Prefix=self.full_key(prefix),
                PaginationConfig={"PageSize": PAGE},
            ):
                yield [
                    (item["Key"][len(self.prefix) :], item["LastModified"])
                    for item in page.get("Contents", [])
                ]
        except _FAILURES as exc:
            raise StoreError(f"could not list {prefix} in {self.description}: {exc}") from exc

    async def delete(self, keys: Sequence[str]) -> None:
        objects = [{"Key": self.full_key(k)} for k in keys]
        for start in range(0, len(objects), 1000):
            try:
                await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": objects[start : start + 1000], "Quiet": True},
                )
            except _FAILURES as exc:
                raise StoreError(f"{self.description} refused a deletion: {exc}") from exc


def log_archive_from(
    *,
    bucket: str | None,
    prefix: str = "",
    endpoint_url: str | None = None,
    local_dir: str | None = None,
) -> LogArchive | None:
    """The configured store: S3 when ``bucket`` is set, else a folder, else None (off)."""
    if bucket:
        return S3Archive(bucket, prefix=prefix, endpoint_url=endpoint_url)
    if local_dir:
        return FolderArchive(local_dir)
    return None
