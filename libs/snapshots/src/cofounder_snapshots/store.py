"""Where snapshots live: an S3 bucket (aioboto3) or a local folder, behind one interface.

Keys are the layout in the package docstring. The S3 store keeps one client open for its life
(``async with``), retries with botocore's standard mode, bounds concurrent transfers with the
caller's semaphore, and sends blobs above ``multipart_threshold`` as multipart uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final, Protocol, Self

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from cofounder_snapshots.errors import StoreError
from cofounder_snapshots.folder import Folder, write_atomically
from cofounder_snapshots.manifest import Manifest
from cofounder_snapshots.s3 import S3Bucket

__all__ = ["LocalStore", "S3Store", "SnapshotStore", "StoreError"]

_MANIFEST: Final = msgspec.json.Decoder(Manifest)
_ENCODE: Final = msgspec.json.Encoder(order="sorted").encode
_HASHES: Final = msgspec.json.Decoder(list[str])
#: What a failed S3 call raises once botocore's retries are spent.
_FAILURES: Final = (ClientError, BotoCoreError, OSError)


def _project(project_id: str) -> str:
    return f"projects/{project_id}"


def blob_key(project_id: str, sha256: str) -> str:
    return f"{_project(project_id)}/blobs/{sha256[:2]}/{sha256}"


def index_key(project_id: str) -> str:
    return f"{_project(project_id)}/index.json"


def manifest_key(project_id: str, build_id: str, version: int) -> str:
    return f"{_project(project_id)}/builds/{build_id}/{version:010d}.json"


def _version_of(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1]
    stem = name.removesuffix(".json")
    return int(stem) if name.endswith(".json") and stem.isdigit() else None


class SnapshotStore(Protocol):
    """What snapshots, restores and retention need from a store (used inside ``async with``)."""

    description: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def read_index(self, project_id: str) -> set[str]: ...

    async def write_index(self, project_id: str, hashes: Iterable[str]) -> None: ...

    async def put_blob(self, project_id: str, sha256: str, data: bytes) -> None: ...

    async def get_blob(self, project_id: str, sha256: str) -> bytes: ...

    async def list_blobs(self, project_id: str) -> set[str]: ...

    async def delete_blobs(self, project_id: str, hashes: Iterable[str]) -> None: ...

    async def put_manifest(self, manifest: Manifest) -> None: ...

    async def get_manifest(self, project_id: str, build_id: str, version: int) -> Manifest: ...

    async def versions(self, project_id: str, build_id: str) -> list[int]:
        """The build's snapshot versions, ascending."""
        ...

    async def builds(self, project_id: str) -> list[str]: ...

    async def delete_manifest(self, project_id: str, build_id: str, version: int) -> None: ...


class LocalStore(Folder):
    """Snapshots in a folder (the embedded default). Writes go through a temporary file and a
    rename, so a reader never sees half a manifest."""

    async def _write(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(write_atomically, self._path(key), data)

    async def _read(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            raise StoreError(f"{key} is not in the store") from None

    async def read_index(self, project_id: str) -> set[str]:
        try:
            return set(_HASHES.decode(await self._read(index_key(project_id))))
        except StoreError:
            return set()

    async def write_index(self, project_id: str, hashes: Iterable[str]) -> None:
        await self._write(index_key(project_id), _ENCODE(sorted(hashes)))

    async def put_blob(self, project_id: str, sha256: str, data: bytes) -> None:
        await self._write(blob_key(project_id, sha256), data)

    async def get_blob(self, project_id: str, sha256: str) -> bytes:
        return await self._read(blob_key(project_id, sha256))

    async def list_blobs(self, project_id: str) -> set[str]:
        base = self._path(f"{_project(project_id)}/blobs")
        return {p.name for p in base.glob("*/*") if not p.name.endswith(".tmp")}

    async def delete_blobs(self, project_id: str, hashes: Iterable[str]) -> None:
        for sha in hashes:
            self._path(blob_key(project_id, sha)).unlink(missing_ok=True)

    async def put_manifest(self, manifest: Manifest) -> None:
        key = manifest_key(manifest.project_id, manifest.build_id, manifest.version)
        await self._write(key, _ENCODE(manifest))

    async def get_manifest(self, project_id: str, build_id: str, version: int) -> Manifest:
        return _MANIFEST.decode(await self._read(manifest_key(project_id, build_id, version)))

    async def versions(self, project_id: str, build_id: str) -> list[int]:
        base = self._path(f"{_project(project_id)}/builds/{build_id}")
        return sorted(v for p in base.glob("*.json") if (v := _version_of(p.name)) is not None)

    async def builds(self, project_id: str) -> list[str]:
        base = self._path(f"{_project(project_id)}/builds")
        return sorted(p.name for p in base.iterdir()) if base.is_dir() else []

    async def delete_manifest(self, project_id: str, build_id: str, version: int) -> None:
        self._path(manifest_key(project_id, build_id, version)).unlink(missing_ok=True)


class S3Store(S3Bucket):
    """Snapshots in an S3 bucket (``endpoint_url`` for MinIO, moto or another S3 API)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        attempts: int = 5,
        multipart_threshold: int = 8 * 1024 * 1024,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(
            bucket,
            what="S3 store",
            prefix=prefix,
            endpoint_url=endpoint_url,
            region=region,
            attempts=attempts,
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            max_pool_connections=32,
        )
        self.multipart_threshold = multipart_threshold
        #: Parts of at least 5 MiB (S3's minimum for all but the last part).
        self.multipart_chunk = max(5 * 1024 * 1024, multipart_threshold)

    async def _put(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        try:
            if len(data) > self.multipart_threshold:
                await self._put_multipart(key, data)
            else:
                # A stream, not raw bytes: aiohttp would otherwise hold the loop on large bodies.
                await self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.full_key(key),
                    Body=io.BytesIO(data),
                    ContentLength=len(data),
                    ContentType=content_type,
                )
        except _FAILURES as exc:
            raise StoreError(f"could not write {key} to {self.description}: {exc}") from exc

    async def _put_multipart(self, key: str, data: bytes) -> None:
        """A multipart upload in ``multipart_chunk``-sized parts (aborted if a part fails, so no
        partial object and no orphaned parts are left)."""
        full = self.full_key(key)
        upload = await self.client.create_multipart_upload(Bucket=self.bucket, Key=full)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), self.multipart_chunk), 1):
                chunk = data[start : start + self.multipart_chunk]
                part = await self.client.upload_part(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=io.BytesIO(chunk),
                    ContentLength=len(chunk),
                )
                parts.append({"PartNumber": number, "ETag": part["ETag"]})
            await self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(*_FAILURES):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id
                )
            raise

    async def _get(self, key: str) -> bytes | None:
        return await self.read(key)

    async def _list(self, prefix: str, *, delimiter: str | None = None) -> list[str]:
        out: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.full_key(prefix)}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        try:
            async for page in paginator.paginate(**kwargs):
                if delimiter:
                    out.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
                else:
                    out.extend(item["Key"] for item in page.get("Contents", []))
        except _FAILURES as exc:
            raise StoreError(f"could not list {prefix} in {self.description}: {exc}") from exc
        return out

    async def read_index(self, project_id: str) -> set[str]:
        data = await self._get(index_key(project_id))
        return set(_HASHES.decode(data)) if data else set()

    async def write_index(self, project_id: str, hashes: Iterable[str]) -> None:
        await self._put(index_key(project_id), _ENCODE(sorted(hashes)), "application/json")

    async def put_blob(self, project_id: str, sha256: str, data: bytes) -> None:
        await self._put(blob_key(project_id, sha256), data)

    async def get_blob(self, project_id: str, sha256: str) -> bytes:
        data = await self._get(blob_key(project_id, sha256))
        if data is None:
            raise StoreError(f"blob {sha256} of project {project_id} is missing")
        return data

    async def list_blobs(self, project_id: str) -> set[str]:
        keys = await self._list(f"{_project(project_id)}/blobs/")
        return {k.rsplit("/", 1)[-1] for k in keys}

    async def delete_blobs(self, project_id: str, hashes: Iterable[str]) -> None:
        keys = [{"Key": self.full_key(blob_key(project_id, h))} for h in hashes]
        for start in range(0, len(keys), 1000):
            try:
                await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": keys[start : start + 1000], "Quiet": True},
                )
            except _FAILURES as exc:
                raise StoreError(f"could not delete blobs from {self.description}: {exc}") from exc

    async def put_manifest(self, manifest: Manifest) -> None:
        key = manifest_key(manifest.project_id, manifest.build_id, manifest.version)
        await self._put(key, _ENCODE(manifest), "application/json")

    async def get_manifest(self, project_id: str, build_id: str, version: int) -> Manifest:
        data = await self._get(manifest_key(project_id, build_id, version))
        if data is None:
            raise StoreError(f"version {version} of build {build_id} does not exist")
        return _MANIFEST.decode(data)

    async def versions(self, project_id: str, build_id: str) -> list[int]:
        keys = await self._list(f"{_project(project_id)}/builds/{build_id}/")
        return sorted(v for k in keys if (v := _version_of(k)) is not None)

    async def builds(self, project_id: str) -> list[str]:
        prefixes = await self._list(f"{_project(project_id)}/builds/", delimiter="/")
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in prefixes)

    async def delete_manifest(self, project_id: str, build_id: str, version: int) -> None:
        try:
            await self.client.delete_object(
                Bucket=self.bucket, Key=self.full_key(manifest_key(project_id, build_id, version))
            )
        except _FAILURES as exc:
            raise StoreError(f"could not delete a manifest from {self.description}: {exc}") from exc
