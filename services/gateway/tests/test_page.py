"""The build page (``/app``): served from the package, every asset from the gateway itself (no
CDN), locked down by its headers; and the operator's list of builds across founders."""

from __future__ import annotations

import re

import httpx
import pytest

from cofounder_gateway.routes.page import ASSETS
from cofounder_gateway.testing import ADMIN, Running


@pytest.fixture
async def client(app_client: httpx.AsyncClient) -> httpx.AsyncClient:
    return app_client


_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
_IMPORT = re.compile(r"""(?:import|from)\s*\(?\s*["']([^"']+)["']""")


async def test_the_pages_and_their_assets_come_from_the_gateway(client: httpx.AsyncClient) -> None:
    pages = {
        "/app/": "builds.html",
        "/app/builds/some-id": "build.html",
        "/app/admin": "admin.html",
    }
    for path in pages:
        page = await client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["x-content-type-options"] == "nosniff"
        for reference in _REFERENCE.findall(page.text):
            if reference.startswith(("#", "data:")):
                continue
            assert reference.startswith("/app/"), (path, reference)  # no CDN, no other origin
            asset = await client.get(reference)
            assert asset.status_code == 200, reference
    # Scripts import only each other, by relative path.
    for name, (body, _, _) in ASSETS.items():
        if name.endswith(".js"):
            for imported in _IMPORT.findall(body.decode()):
                assert imported.startswith("./"), (name, imported)
                assert imported[2:] in ASSETS, (name, imported)
        assert b"http://" not in body, name
        assert b"https://" not in body, name
    assert (await client.get("/app", follow_redirects=False)).headers["location"] == "/app/"


async def test_assets_are_cached_by_etag_and_nothing_else_is_served(
    client: httpx.AsyncClient,
) -> None:
    script = await client.get("/app/static/build.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    again = await client.get(
        "/app/static/build.js", headers={"If-None-Match": script.headers["etag"]}
    )
    assert again.status_code == 304
    for missing in ("nope.js", "build.html", "..%2Fauth.py", "%2e%2e%2fapp.py"):
        assert (await client.get(f"/app/static/{missing}")).status_code == 404, missing


async def test_the_pages_are_not_part_of_the_api_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/app")]
    assert "/v1/stream-tokens" in paths
    assert "/v1/admin/builds" in paths


async def test_the_timeline_is_a_live_region_and_every_field_has_a_label(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/app/builds/x")).text
    assert 'role="log"' in page
    assert 'aria-live="polite"' in page
    assert '<html lang="en">' in page
    for field in re.findall(r'<(?:input|select|meter)[^>]*\bid="([^"]+)"', page):
        assert f'for="{field}"' in page, field


@pytest.mark.integration
async def test_operators_list_builds_across_founders_by_status(gateway: Running) -> None:
    client = gateway.client
    made: dict[str, str] = {}
    for _ in range(2):
        user, project = await gateway.seed_user()
        started = await client.post(
            f"/v1/projects/{project}/builds", json={}, headers=gateway.auth(user)
        )
        assert started.status_code == 202, started.text
        made[started.json()["id"]] = user
    cancelled = next(iter(made))
    await client.post(f"/v1/builds/{cancelled}/cancel", headers=gateway.auth(made[cancelled]))

    listed = await client.get("/v1/admin/builds", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    by_id = {b["id"]: b for b in listed.json()["items"]}
    assert set(made) <= set(by_id)
    assert {by_id[b]["user_id"] for b in made} == set(made.values())  # both founders

    queued = await client.get("/v1/admin/builds", params={"status": "queued"}, headers=ADMIN)
    assert {b["status"] for b in queued.json()["items"]} == {"queued"}
    assert cancelled not in {b["id"] for b in queued.json()["items"]}
    both = await client.get(
        "/v1/admin/builds", params=[("status", "queued"), ("status", "cancelled")], headers=ADMIN
    )
    assert set(made) <= {b["id"] for b in both.json()["items"]}

    first = await client.get("/v1/admin/builds", params={"limit": 1}, headers=ADMIN)
    assert len(first.json()["items"]) == 1
    cursor = first.json()["next_cursor"]
    second = await client.get(
        "/v1/admin/builds", params={"limit": 1, "cursor": cursor}, headers=ADMIN
    )
    assert second.json()["items"][0]["id"] != first.json()["items"][0]["id"]

    assert (await client.get("/v1/admin/builds")).status_code == 401
    founder = gateway.auth(next(iter(made.values())))
    assert (await client.get("/v1/admin/builds", headers=founder)).status_code == 401
    bad = await client.get("/v1/admin/builds", params={"status": "asleep"}, headers=ADMIN)
    assert bad.status_code == 422
