"""Where the screenshot tool's PNGs are kept, and how a founder reaches one.

Two stores behind one interface, chosen like the snapshot store
(:meth:`ScreenshotSettings.screenshot_store`):

- S3 (``SCREENSHOTS_BUCKET``; the snapshots' endpoint and credentials): the reference is a
  presigned ``GET`` URL valid for ``url_ttl_s`` (7 days at most: SigV4's limit). Anyone holding
  it can fetch the image until it expires, like any presigned link; the bucket itself stays
  private.
- A folder (``SCREENSHOTS_DIR``, the embedded default of ``cofounder dev``): the reference is the
  gateway's route ``/v1/builds/{build_id}/screenshots/{name}``, authorised like the build (its
  owner, the build page's token, the admin), since a folder has no URL of its own.

Keys are ``builds/{build_id}/screenshots/{name}``; names are :func:`screenshot_name`'s, checked
by :func:`valid_name` wherever one comes from outside.
"""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Final, Protocol, Self

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field
from pydantic_settings import BaseSettings

from cofounder_snapshots.errors import StoreError
from cofounder_snapshots.folder import Folder, write_atomically
from cofounder_snapshots.s3 import S3Bucket

__all__ = [
    "MAX_URL_TTL_S",
    "LocalScreenshots",
    "S3Screenshots",
    "ScreenshotRef",
    "ScreenshotSettings",
    "ScreenshotStore",
    "gateway_path",
    "screenshot_name",
    "valid_name",
]

#: The longest a SigV4 presigned URL may live.
MAX_URL_TTL_S: Final = 7 * 24 * 3600
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.png")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_BUILD_ID: Final = re.compile(r"[0-9A-Za-z-]{1,64}")


def screenshot_name(iteration: int, tool_use_id: str) -> str:
    """The file name of one screenshot: the turn, then the tool call (one screenshot each)."""
    return f"{iteration:05d}-{_UNSAFE.sub('_', tool_use_id)[:100]}.png"


def valid_name(name: str) -> bool:
    """Whether ``name`` is a screenshot's file name (no path, no ``..``)."""
    return _NAME.fullmatch(name) is not None and ".." not in name


def _key(build_id: str, name: str) -> str:
    if not _BUILD_ID.fullmatch(build_id) or not valid_name(name):
        raise StoreError(f"refused: not a screenshot of a build: {build_id!r}, {name!r}")
    return f"builds/{build_id}/screenshots/{name}"


def gateway_path(build_id: str, name: str) -> str:
    """The gateway's route to a screenshot in the folder store (relative to the gateway)."""
    return f"/v1/builds/{build_id}/screenshots/{name}"


@dataclass(frozen=True, slots=True)
class ScreenshotRef:
    """Where a stored screenshot is: ``url`` for a founder (presigned, or the gateway's route),
    ``expires_at`` when the URL stops working (None: it does not), ``location`` for operators."""

    url: str
    location: str
    expires_at: datetime | None = None


class ScreenshotStore(Protocol):
    """Keeps screenshots (used inside ``async with``)."""

    description: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def put(self, build_id: str, name: str, data: bytes) -> ScreenshotRef:
        """Store ``data`` (a PNG) and say how to reach it; :class:`StoreError` on failure."""
        ...

    async def get(self, build_id: str, name: str) -> bytes | None:
        """The PNG, or None when there is none by that name."""
        ...


class LocalScreenshots(Folder):
    """Screenshots in a folder; written through a temporary file and a rename."""

    async def put(self, build_id: str, name: str, data: bytes) -> ScreenshotRef:
        path = self._path(_key(build_id, name))
        try:
            await asyncio.to_thread(write_atomically, path, data)
        except OSError as exc:
            raise StoreError(f"could not write {path}: {exc}") from exc
        return ScreenshotRef(url=gateway_path(build_id, name), location=str(path))

    async def get(self, build_id: str, name: str) -> bytes | None:
        try:
            path = self._path(_key(build_id, name))
        except StoreError:
            return None
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError):
            return None


class S3Screenshots(S3Bucket):
    """Screenshots in an S3 bucket; references are presigned URLs (see the module docstring)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        url_ttl_s: int = MAX_URL_TTL_S,
        attempts: int = 5,
    ) -> None:
        super().__init__(
            bucket,
            what="S3 screenshot store",
            prefix=prefix,
            endpoint_url=endpoint_url,
            attempts=attempts,
        )
        self.url_ttl_s = max(1, min(url_ttl_s, MAX_URL_TTL_S))

    async def put(self, build_id: str, name: str, data: bytes) -> ScreenshotRef:
        key = self.prefix + _key(build_id, name)
        try:
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=io.BytesIO(data),
                ContentLength=len(data),
                ContentType="image/png",
            )
            url: str = await self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=self.url_ttl_s,
            )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StoreError(f"could not store {key} in {self.description}: {exc}") from exc
        return ScreenshotRef(
            url=url,
            location=f"s3://{self.bucket}/{key}",
            expires_at=datetime.now(UTC) + timedelta(seconds=self.url_ttl_s),
        )

    async def get(self, build_id: str, name: str) -> bytes | None:
        try:
            key = _key(build_id, name)
        except StoreError:
            return None
        return await self.read(key)


class ScreenshotSettings(BaseSettings):
    """Where screenshots live, read alike by the agent runner (writes) and the gateway (serves
    ``/v1/builds/{id}/screenshots/{name}``). ``S3_ENDPOINT_URL`` and the AWS credentials are
    the snapshots' own."""

    screenshots_bucket: str | None = Field(
        default=None,
        description="S3 bucket of the screenshot tool's PNGs; events carry presigned URLs to "
        "them. Unset (and no SCREENSHOTS_DIR): the model still sees its screenshots, nobody "
        "else does.",
    )
    screenshots_prefix: str = Field(default="", description="Key prefix inside the bucket.")
    screenshots_dir: str | None = Field(
        default=None,
        description="A folder for screenshots instead of S3 (the embedded default); events "
        "carry the gateway's route to them, so the gateway needs the same folder.",
    )
    screenshot_url_ttl_s: int = Field(
        default=MAX_URL_TTL_S,
        ge=1,
        le=MAX_URL_TTL_S,
        description="How long a screenshot's presigned URL works (S3; 7 days at most).",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, moto); default: AWS."
    )

    def screenshot_store(self) -> ScreenshotStore | None:
        """The configured store (enter it with ``async with``): S3 when ``SCREENSHOTS_BUCKET`` is
        set, else the folder ``SCREENSHOTS_DIR``, else None: screenshots are still shown to the
        model, but not kept."""
        if self.screenshots_bucket:
            return S3Screenshots(
                self.screenshots_bucket,
                prefix=self.screenshots_prefix,
                endpoint_url=self.s3_endpoint_url,
                url_ttl_s=self.screenshot_url_ttl_s,
            )
        if self.screenshots_dir:
            return LocalScreenshots(self.screenshots_dir)
        return None
