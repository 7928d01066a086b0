"""One S3 bucket under a key prefix, with an aioboto3 client for the life of an ``async with``.

The snapshot store, the log archive and the screenshot store each keep their objects in a
bucket of their own, with the same credentials and endpoint settings; this is what they share:
the prefix's normal form, the retry policy (botocore's ``standard`` mode), one client opened on
entry and closed on exit (a client per call would pay a TLS handshake each time), and the
error for a store used outside its ``async with``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cofounder_snapshots.errors import StoreError

__all__ = ["S3Bucket"]


class S3Bucket:
    """``bucket``, under ``prefix``, at ``endpoint_url`` (MinIO, moto or another S3 API) or AWS.

    ``what`` names the store in the error for a call outside ``async with``; ``config`` adds
    botocore settings (timeouts, pool size) to the retry policy."""

    def __init__(
        self,
        bucket: str,
        *,
        what: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        attempts: int = 5,
        **config: Any,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.description = f"s3://{bucket}/{self.prefix}"
        self._what = what
        self._endpoint_url = endpoint_url
        self._region = region
        self._config = Config(retries={"max_attempts": attempts, "mode": "standard"}, **config)
        self._session = aioboto3.Session()
        self._context: Any = None
        self._client: Any = None

    async def __aenter__(self) -> Self:
        self._context = self._session.client(
            "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=self._config
        )
        self._client = await self._context.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._context is not None:
            await self._context.__aexit__(kind, exc, tb)
        self._context = self._client = None

    @property
    def client(self) -> Any:
        """The open client; ``RuntimeError`` outside ``async with``."""
        if self._client is None:
            raise RuntimeError(f"use the {self._what} inside `async with`")
        return self._client

    def full_key(self, key: str) -> str:
        """``key`` under the prefix."""
        return self.prefix + key

    async def read(self, key: str) -> bytes | None:
        """The object at ``key`` (under the prefix), None when there is none; :class:`StoreError`
        when the bucket cannot be read (after botocore's retries)."""
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=self.full_key(key))
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise StoreError(f"could not read {key} from {self.description}: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise StoreError(f"could not read {key} from {self.description}: {exc}") from exc
