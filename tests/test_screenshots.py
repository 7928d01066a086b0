"""The screenshot tool in real headless Chromium, inside the local sandbox's jail, through the
whole pipeline (the scripted model's demo build, every service as a process):

- the demo build's screenshot is a PNG of its running preview: the size of the browser's window,
  not blank, the same picture the host's Chromium takes of the preview, and the landing page's
  heading is in it (a picture of the same page without its ``<h1>`` differs exactly there; the
  preview's DOM has that ``<h1>``);
- it is stored (the folder store), an ``agent.screenshot_taken`` event on the build's feed
  refers to it, the owner fetches it through that reference (and the build page, with its stream
  token, shows it), the admin too; another founder gets 404, nobody without a token gets it.

The scripted model refuses a malformed image block (libs/scripted-model's tests); here every
model call of the build, screenshot included, was accepted. Skipped, saying why, only where no
``chromium`` binary exists (``bin/bootstrap`` with BOOTSTRAP_FOR_TESTS and ``.ci/run`` install
Debian's).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageChops

from cofounder_testing.databases import migrated_database
from cofounder_testing.pipeline import Stack, running_stack

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": "Bearer dev-admin-token"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: The demo transcript's landing page (libs/scripted-model/.../demo-webapp.yaml) and its heading.
HEADING = "Welcome to the MVP"
WINDOW = (1280, 800)


@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    root = tmp_path_factory.mktemp("screenshots")
    with (
        migrated_database(database_url) as url,
        running_stack(
            root,
            database_url=url,
            builds=2,
            SCREENSHOTS_DIR=str(root / "screenshots"),
            # The preview stays up after the build, to be compared with the screenshot.
            SANDBOX_AFTER_BUILD="keep",
        ) as stack,
    ):
        yield stack


def _founder(http: httpx.Client) -> dict[str, Any]:
    seeded = http.post("/v1/admin/demo", headers=ADMIN)
    assert seeded.status_code == 201, seeded.text
    founder: dict[str, Any] = seeded.json()
    founder["auth"] = {"Authorization": f"Bearer {founder['token']}"}
    return founder


def _events(http: httpx.Client, founder: dict[str, Any], build_id: str) -> list[dict[str, Any]]:
    """The build's feed to its end (the stream ends with the build)."""
    found: list[dict[str, Any]] = []
    with http.stream(
        "GET", f"/v1/builds/{build_id}/events", headers=founder["auth"], timeout=240
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line[6:]))
    return found


def _host_shot(url: str, out: Path) -> Image.Image:
    """The host's Chromium's picture of ``url``, with the tool's window."""
    assert CHROMIUM is not None
    profile = out.with_suffix(".profile")
    args = [CHROMIUM, "--headless", "--disable-gpu", "--disable-dev-shm-usage",
            "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={out}", url]  # fmt: skip
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # a throwaway page of ours, rendered by the test
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return Image.open(out).convert("RGB")


def _dom(url: str, tmp: Path) -> str:
    assert CHROMIUM is not None
    args = [CHROMIUM, "--headless", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp / 'dom-profile'}", "--dump-dom", url]  # fmt: skip
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")
    done = subprocess.run(args, check=True, capture_output=True, timeout=60, text=True)
    return done.stdout


def test_the_demo_builds_screenshot_is_its_preview_stored_referenced_and_authorised(
    stack: Stack, tmp_path: Path
) -> None:
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
        founder = _founder(http)
        created = http.post(
            f"/v1/projects/{founder['project_id']}/builds", json={}, headers=founder["auth"]
        )
        assert created.status_code == 202, created.text
        build_id = created.json()["id"]
        events = _events(http, founder, build_id)
        types = [e["type"] for e in events]
        assert "build.completed" in types, types

        # The tool succeeded, and an event refers to the stored PNG.
        shot_call = next(
            e for e in events if e["type"] == "tool.completed" and e["name"] == "screenshot"
        )
        assert not shot_call["is_error"], shot_call
        taken = [e for e in events if e["type"] == "agent.screenshot_taken"]
        assert len(taken) == 1, types
        event = taken[0]
        assert event["tool_use_id"] == shot_call["tool_use_id"]
        assert event["url"] == f"/v1/builds/{build_id}/screenshots/{event['name']}"
        assert event["expires_at"] is None  # the folder store's reference does not expire
        stored = Path(
            stack.env["SCREENSHOTS_DIR"], "builds", build_id, "screenshots", event["name"]
        )
        assert stored.is_file()

        # The owner fetches it through the reference: the stored PNG.
        got = http.get(event["url"], headers=founder["auth"])
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "image/png"
        assert got.content == stored.read_bytes()
        assert event["bytes"] == len(got.content)
        # The admin too; the build page's stream token (an <img> sends no header) too.
        assert http.get(event["url"], headers=ADMIN).content == got.content
        token = http.post(
            "/v1/stream-tokens", json={"build_id": build_id}, headers=founder["auth"]
        ).json()["token"]
        assert http.get(event["url"], params={"token": token}).content == got.content
        # Another founder: as if there were no such build. Nobody: 401.
        other = _founder(http)
        refused = http.get(event["url"], headers=other["auth"])
        assert refused.status_code == 404
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "build_not_found"
        assert http.get(event["url"]).status_code == 401
        missing = http.get(
            f"/v1/builds/{build_id}/screenshots/00000-none.png", headers=founder["auth"]
        )
        assert missing.status_code == 404
        assert missing.json()["type"] == "screenshot_not_found"

        build = http.get(f"/v1/builds/{build_id}", headers=founder["auth"]).json()
    preview = build["preview_url"]
    assert preview

    # A PNG of the browser's window, not blank.
    shot = Image.open(io.BytesIO(got.content))
    assert shot.format == "PNG"
    assert shot.size == WINDOW == (event["width"], event["height"])
    rgb = shot.convert("RGB")
    assert len(rgb.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 2  # text, not one colour
    inked = ImageChops.invert(rgb).getbbox()  # where anything but white is
    assert inked is not None

    # Of the running preview: the host's Chromium takes the same picture of it.
    host = _host_shot(preview, tmp_path / "host.png")
    assert host.size == WINDOW
    assert ImageChops.difference(rgb, host).getbbox() is None
    # Its heading is visible: the preview's DOM has it, and the same page without its <h1>
    # differs from the screenshot only where the heading is (the top of the page).
    dom = _dom(preview, tmp_path)
    assert f"<h1>{HEADING}</h1>" in dom
    page = httpx.get(preview, timeout=10).text
    assert f"<h1>{HEADING}</h1>" in page
    headless = page.replace(f"<h1>{HEADING}</h1>", "")
    without = _host_shot(
        "data:text/html;base64," + base64.b64encode(headless.encode()).decode(),
        tmp_path / "without.png",
    )
    changed = ImageChops.difference(rgb, without).getbbox()
    assert changed is not None, "the screenshot does not show the heading"
    left, top, right, _ = changed
    assert top < 100, changed  # the heading is the page's first line
    assert right - left > 100, changed  # a line of text across the page
