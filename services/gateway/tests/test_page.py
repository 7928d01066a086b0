"""The build page (``/app``): served from the package, every asset from the gateway itself (no
CDN), locked down by its headers; and the operator's list of builds across founders."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cofounder_contracts import (
    AgentSleeping,
    BuildCompleted,
    BuildFailed,
    BuildStatus,
    BuildStatusChanged,
)
from cofounder_gateway.routes.page import ASSETS
from cofounder_gateway.testing import ADMIN, Running
from cofounder_runtime.publisher import Publisher
from cofounder_testing.waiting import eventually


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


def _default_statuses() -> list[str]:
    """The statuses the operator view asks for when it opens: its boxes checked by default
    (``admin.html``), each a group of statuses (``GROUPS`` in ``admin.js``)."""
    page = ASSETS["admin.html"][0].decode()
    checked = re.findall(r'<input type="checkbox" name="group" value="(\w+)" checked>', page)
    script = ASSETS["admin.js"][0].decode()
    body = re.search(r"const GROUPS = \{(.*?)\};", script, re.S)
    assert body is not None
    groups = {
        name: re.findall(r'"(\w+)"', members)
        for name, members in re.findall(r"(\w+): \[([^\]]*)\]", body.group(1))
    }
    return [status for group in checked for status in groups[group]]


@pytest.mark.integration
async def test_the_operators_default_view_lists_sleeping_and_failed_builds_not_ended_ones(
    gateway: Running,
) -> None:
    defaults = _default_statuses()
    assert sorted(defaults) == sorted(
        ["queued", "assembling", "running", "finishing", "sleeping", "failed"]
    )

    client, publisher = gateway.client, Publisher(gateway.gw.redis)
    (alice, alices_project), (bob, bobs_project) = (
        await gateway.seed_user(tier="pro"),
        await gateway.seed_user(tier="pro"),
    )

    async def build(user: str, project: str) -> str:
        started = await client.post(
            f"/v1/projects/{project}/builds", json={}, headers=gateway.auth(user)
        )
        assert started.status_code == 202, started.text
        return str(started.json()["id"])

    running, sleeping, ready = [await build(alice, alices_project) for _ in range(3)]
    failed, cancelled = [await build(bob, bobs_project) for _ in range(2)]
    assert (
        await client.post(f"/v1/builds/{cancelled}/cancel", headers=gateway.auth(bob))
    ).status_code == 202

    def envelope(build_id: str, user: str, project: str) -> dict[str, str]:
        return {"build_id": build_id, "project_id": project, "user_id": user, "producer": "test"}

    reason = "the model refused the request: prompt is too long"
    for event in (
        BuildStatusChanged(**envelope(running, alice, alices_project), status=BuildStatus.RUNNING),
        AgentSleeping(
            **envelope(sleeping, alice, alices_project),
            resets_at=datetime.now(UTC) + timedelta(hours=3),
            checkpoint_seq=4,
        ),
        BuildCompleted(
            **envelope(ready, alice, alices_project),
            build_version=1,
            preview_url="http://x",
            summary="done",
            iterations=1,
            tool_calls=1,
        ),
        BuildFailed(**envelope(failed, bob, bobs_project), reason=reason),
    ):
        await publisher.emit(event)
    expected = {
        running: "running",
        sleeping: "sleeping",
        ready: "ready",
        failed: "failed",
        cancelled: "cancelled",
    }

    async def everything() -> dict[str, dict[str, Any]]:
        listed = await client.get("/v1/admin/builds", params={"limit": 200}, headers=ADMIN)
        assert listed.status_code == 200, listed.text
        return {b["id"]: b for b in listed.json()["items"] if b["id"] in expected}

    async def projected() -> bool:
        return {i: b["status"] for i, b in (await everything()).items()} == expected

    await eventually(projected, what="every build's status projected")

    # What the page asks for when it opens: the live, sleeping and failed builds of both
    # founders, with the failure's reason; none that ended otherwise.
    params = [("limit", "200"), *(("status", status) for status in defaults)]
    shown = await client.get("/v1/admin/builds", params=params, headers=ADMIN)
    assert shown.status_code == 200, shown.text
    items = shown.json()["items"]
    assert {b["status"] for b in items} <= set(defaults)
    by_id = {b["id"]: b for b in items}
    assert {running, sleeping, failed} <= set(by_id)
    assert not {ready, cancelled} & set(by_id)
    assert (by_id[sleeping]["user_id"], by_id[failed]["user_id"]) == (alice, bob)
    assert by_id[failed]["error"] == reason
    assert by_id[sleeping]["status_changed_at"]

    # One group at a time, as the page's boxes ask.
    for status, build_id in (("sleeping", sleeping), ("failed", failed)):
        alone = await client.get(
            "/v1/admin/builds", params={"status": status, "limit": 200}, headers=ADMIN
        )
        assert {b["status"] for b in alone.json()["items"]} == {status}
        assert build_id in {b["id"] for b in alone.json()["items"]}
