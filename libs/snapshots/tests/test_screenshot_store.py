"""The screenshot stores: a folder (the gateway's route as reference) and S3 on moto's server
(a presigned URL that fetches the PNG, and expires); names that would leave the store refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import aioboto3
import httpx
import pytest

from cofounder_snapshots.screenshots import (
    LocalScreenshots,
    S3Screenshots,
    ScreenshotSettings,
    screenshot_name,
    valid_name,
)
from cofounder_snapshots.store import StoreError

BUILD = "0195a0e2-6c1e-7c4a-9a51-3f1d2b7e8a10"
PNG = b"\x89PNG\r\n\x1a\n" + b"not really the rest"


def test_names_are_safe_file_names() -> None:
    assert screenshot_name(7, "toolu_01S") == "00007-toolu_01S.png"
    assert screenshot_name(3, "../../etc/passwd") == "00003-______etc_passwd.png"
    assert valid_name(screenshot_name(3, "../x"))
    for bad in ("../a.png", "a/b.png", "a.jpg", ".png", "", "x" * 200 + ".png", "a..png"):
        assert not valid_name(bad), bad


async def test_the_folder_store_keeps_it_and_refers_to_the_gateways_route(tmp_path: Path) -> None:
    async with LocalScreenshots(tmp_path) as store:
        ref = await store.put(BUILD, "00001-toolu_1.png", PNG)
        assert ref.url == f"/v1/builds/{BUILD}/screenshots/00001-toolu_1.png"
        assert ref.expires_at is None
        assert Path(ref.location).read_bytes() == PNG  # noqa: ASYNC240 - a test's check
        assert await store.get(BUILD, "00001-toolu_1.png") == PNG
        assert await store.get(BUILD, "00002-none.png") is None
        assert await store.get(BUILD, "../../x.png") is None
        with pytest.raises(StoreError):
            await store.put("../../etc", "00001-x.png", PNG)


@pytest.mark.integration
async def test_the_s3_store_refers_with_a_presigned_url_that_fetches_it(
    s3_endpoint_url: str,
) -> None:
    bucket = f"screenshots-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("s3", endpoint_url=s3_endpoint_url) as client:
        await client.create_bucket(Bucket=bucket)
    settings = ScreenshotSettings(
        screenshots_bucket=bucket,
        screenshots_prefix="shots",
        s3_endpoint_url=s3_endpoint_url,
        screenshot_url_ttl_s=600,
    )
    store = settings.screenshot_store()
    assert isinstance(store, S3Screenshots)
    async with store:
        ref = await store.put(BUILD, "00004-toolu_4.png", PNG)
        assert ref.location == f"s3://{bucket}/shots/builds/{BUILD}/screenshots/00004-toolu_4.png"
        assert ref.expires_at is not None
        assert "X-Amz-Expires=600" in ref.url or "Expires=" in ref.url
        async with httpx.AsyncClient() as http:
            fetched = await http.get(ref.url)
            assert fetched.status_code == 200
            assert fetched.content == PNG
            assert fetched.headers["content-type"] == "image/png"
            # Without the signature the bucket is private.
            assert (await http.get(ref.url.split("?")[0])).status_code == 403
        assert await store.get(BUILD, "00004-toolu_4.png") == PNG
        assert await store.get(BUILD, "00005-none.png") is None


def test_no_bucket_and_no_folder_keeps_nothing() -> None:
    assert ScreenshotSettings().screenshot_store() is None
    assert isinstance(
        ScreenshotSettings(screenshots_dir="/tmp/x").screenshot_store(),
        LocalScreenshots,
    )
