"""The build page in a real browser: Debian's headless Chromium, driven by Playwright (which
downloads no browser here: it launches the machine's ``chromium``), against the whole pipeline
as processes (the scripted model, every service).

- a demo build is followed live from queued to completed, and a connection cut mid-build (every
  socket between browser and gateway closed, new ones refused for a while) resumes with no row
  twice and none missing: the rows are exactly the build's feed;
- cancel works from the page; the operator view lists the build while it runs;
- a founder's stream token is refused for another founder's build, and expires;
- no token the page used appears in the gateway's log;
- a finished build whose feed Redis no longer has plays back from the log archive, with the
  same rows, and shows the agent's screenshot of the app it built;
- a screenshot of the finished page: ``<tmp>/build-page.png``, and with ``UPDATE_SCREENSHOTS=1``
  also ``docs/images/build-page.png`` (the README's).

Skipped, saying why, only where no ``chromium`` binary exists (``bin/bootstrap`` and
``.ci/run`` install Debian's).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cofounder_contracts.streams import build_feed_key
from cofounder_testing.databases import migrated_database
from cofounder_testing.pipeline import Stack, at_rest, running_stack, wait_for

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": "Bearer dev-admin-token"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Seconds a stream token lives in this stack: tokens expire during a build, so the page must
#: renew them, and the expiry test waits this long.
STREAM_TOKEN_TTL_S = 5
#: The scripted model's answer time: a demo build lasts long enough to cut and cancel it.
LATENCY_MS = 1_000
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "build-page.png"


class Proxy:
    """A TCP relay between the browser and the gateway that can cut every connection and refuse
    new ones for a while: what a dropped Wi-Fi or a restarted load balancer does to a page."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.live: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.refusing_until = 0.0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refusing_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.live |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            self._drop(end)

    def _drop(self, end: socket.socket) -> None:
        with self.lock:
            self.live.discard(end)
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        end.close()

    def cut(self, *, refuse_for_s: float) -> int:
        """Close every connection now and refuse new ones for ``refuse_for_s``; how many were
        cut."""
        self.refusing_until = time.monotonic() + refuse_for_s
        with self.lock:
            ends = list(self.live)
        for end in ends:
            self._drop(end)
        return len(ends)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut(refuse_for_s=0)


@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    root = tmp_path_factory.mktemp("build-page")
    with (
        migrated_database(database_url) as url,
        running_stack(
            root,
            database_url=url,
            builds=4,
            latency_ms=LATENCY_MS,
            STREAM_TOKEN_TTL_S=str(STREAM_TOKEN_TTL_S),
        ) as stack,
    ):
        yield stack


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:

    with sync_playwright() as playwright:
        # The machine's Chromium: Playwright downloads nothing. As root, Chromium's own sandbox
        # cannot start; the page is ours and the test throwaway.
        args = ["--disable-dev-shm-usage"]  # a container's /dev/shm may be tiny
        if os.geteuid() == 0:
            args.append("--no-sandbox")
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        yield client


def _founder(http: httpx.Client) -> dict[str, Any]:
    seeded = http.post("/v1/admin/demo", headers=ADMIN)
    assert seeded.status_code == 201, seeded.text
    founder: dict[str, Any] = seeded.json()
    founder["auth"] = {"Authorization": f"Bearer {founder['token']}"}
    return founder


def _start_build(http: httpx.Client, founder: dict[str, Any]) -> str:
    created = http.post(
        f"/v1/projects/{founder['project_id']}/builds", json={}, headers=founder["auth"]
    )
    assert created.status_code == 202, created.text
    build_id: str = created.json()["id"]
    return build_id


def _page_url(http: httpx.Client, founder: dict[str, Any], build_id: str, base: str) -> str:
    """The page's address with a one-time login code in its fragment (as ``cofounder dev``
    prints it)."""
    made = http.post("/v1/login-codes", json={"build_id": build_id}, headers=founder["auth"])
    assert made.status_code == 201, made.text
    return base + str(made.json()["page_url"])


def _feed_ids(http: httpx.Client, founder: dict[str, Any], build_id: str) -> list[str]:
    """Every SSE id of the (ended) build's feed, with the founder's bearer token: to the build's
    end, then what came after it (the stream stops at the end; the next read goes on)."""
    ids: list[str] = []
    while True:
        headers = {**founder["auth"], **({"Last-Event-ID": ids[-1]} if ids else {})}
        url = f"/v1/builds/{build_id}/events"
        with http.stream("GET", url, headers=headers) as stream:
            got = [line[4:] for line in stream.iter_lines() if line.startswith("id: ")]
        if not got:
            return ids
        ids += got


def _row_ids(page: Page) -> list[str]:
    """The SSE ids the page's timeline rows stand for, in row order (a tool row stands for its
    call and its result)."""
    found: list[str] = page.eval_on_selector_all(
        "#timeline li", "rows => rows.flatMap(r => r.dataset.sseIds.split(' ').filter(Boolean))"
    )
    return found


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def test_a_demo_build_is_followed_live_and_a_cut_connection_resumes_exactly(
    stack: Stack, browser: Browser, http: httpx.Client, tmp_path: Path
) -> None:
    founder = _founder(http)
    build_id = _start_build(http, founder)
    proxy = Proxy(int(stack.env["PORT"]))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(_page_url(http, founder, build_id, f"http://127.0.0.1:{proxy.port}"))
        # The code is gone from the address bar once used.
        assert "#code=" not in page.url
        page.wait_for_selector("#connection[data-state=live]", timeout=30_000)
        assert page.title().startswith(f"Build {build_id[:8]}")
        # The page's own session token (the login code's exchange), kept in the tab.
        session = page.evaluate("() => sessionStorage.getItem('cofounder.token')")
        assert session
        assert session != founder["token"]

        # Live: the build's first steps appear while it runs; the first row is "queued".
        page.wait_for_selector("#timeline li.kind-tool", timeout=60_000)
        assert page.inner_text("#timeline li:first-child .badge") == "queued"
        shown = page.eval_on_selector_all(
            "#timeline li.kind-status .badge", "b => b.map(x => x.textContent)"
        )
        assert shown[:3] == ["queued", "assembling", "running"]
        assert page.get_attribute("#connection", "data-state") == "live"
        expect(page.locator("#status")).to_have_text(re.compile("running|finishing"))  # not over
        rows_before = len(_row_ids(page))

        # Cut every connection mid-build; new ones are refused for 4 s.
        assert proxy.cut(refuse_for_s=4) >= 1
        page.wait_for_selector("#connection[data-state=reconnecting]", timeout=10_000)
        # Back: a second connection, resuming after the last row shown.
        page.wait_for_function(
            "() => Number(document.getElementById('connection').dataset.connections) >= 2",
            timeout=60_000,
        )

        # To the end, live.
        page.wait_for_selector("#connection[data-state=ended]", timeout=180_000)
        expect(page.locator("#status")).to_have_text("ready")
        expect(page.locator("#outcome-text")).to_have_text("Completed: version 1.")
        expect(page.locator("#outcome-summary")).not_to_be_empty()
        preview = page.get_attribute("#preview a", "href")
        assert preview
        assert preview.startswith("http://127.0.0.1:")
        assert float(page.get_attribute("#budget-meter", "max") or 0) > 1
        expect(page.locator("#budget-text")).to_contain_text("spent today")

        # Exactly the build's feed: no row twice, none missing, in the feed's order. The page
        # reads what comes after the end (the final snapshot) a few times after it.
        with contextlib.closing(sync_redis.Redis(port=stack.redis_port)) as client:
            wait_for("the pipeline at rest", lambda: at_rest(client), stack, timeout=60)
        feed = _feed_ids(http, founder, build_id)
        page.wait_for_function(
            f"() => document.querySelectorAll('#timeline li').length > 0 && "
            f"[...document.querySelectorAll('#timeline li')].flatMap("
            f"r => r.dataset.sseIds.split(' ').filter(Boolean)).length >= {len(feed)}",
            timeout=60_000,
        )
        rows = _row_ids(page)
        assert len(rows) == len(set(rows)), "a row was shown twice"
        assert set(rows) == set(feed), "the page misses or invents rows"
        assert len(rows) > rows_before
        assert page.inner_text("#snapshot").startswith("version ")  # the final one, after the end
        firsts = page.eval_on_selector_all(
            "#timeline li", "rows => rows.map(r => r.dataset.sseIds.split(' ')[0])"
        )
        assert firsts == sorted(firsts, key=_order)
        page.evaluate("() => window.scrollTo(0, 0)")
        shot = tmp_path / "build-page.png"
        page.screenshot(
            path=str(shot), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 1500}
        )
        assert shot.stat().st_size > 10_000
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)

        tool = page.locator("#timeline li.kind-tool").first
        assert tool.locator(".duration").inner_text().endswith(("ms", " s"))
        # Outputs are collapsed; a keyboard opens one.
        output = tool.locator("details")
        assert output.get_attribute("open") is None
        output.locator("summary").focus()
        page.keyboard.press("Enter")
        assert output.get_attribute("open") is not None

    finally:
        context.close()
        proxy.close()

    # The bearer never went in a URL; the stream tokens did, and the log has none of them.
    stream_urls = [u for u in requested if "/events?" in u]
    assert len(stream_urls) >= 2  # the first connection and at least one after the cut
    tokens = {httpx.URL(u).params["token"] for u in stream_urls}
    assert founder["token"] not in " ".join(requested)
    assert session not in " ".join(requested)
    log = stack.log("gateway")
    for secret in (*tokens, session, founder["token"]):
        assert secret not in log


def test_an_archived_build_plays_back_on_the_page_with_its_screenshot(
    stack: Stack, browser: Browser, http: httpx.Client
) -> None:
    founder = _founder(http)
    build_id = _start_build(http, founder)
    archives = Path(stack.env["LOG_ARCHIVE_DIR"])
    wait_for(
        "the build's log archived",
        lambda: any(archives.rglob(f"{build_id}.jsonl.gz")),
        stack,
        timeout=240,
    )
    feed = _feed_ids(http, founder, build_id)
    with contextlib.closing(sync_redis.Redis(port=stack.redis_port)) as client:
        assert client.delete(build_feed_key(build_id)) == 1  # as if it expired
    assert _feed_ids(http, founder, build_id) == feed  # served from the archive, same ids

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(_page_url(http, founder, build_id, stack.gateway_url))
        page.wait_for_selector("#connection[data-state=ended]", timeout=60_000)
        expect(page.locator("#outcome-text")).to_have_text("Completed: version 1.")
        page.wait_for_function(
            "n => [...document.querySelectorAll('#timeline li')].flatMap("
            "r => r.dataset.sseIds.split(' ').filter(Boolean)).length >= n",
            arg=len(feed),
            timeout=30_000,
        )
        rows = _row_ids(page)
        assert len(rows) == len(set(rows))
        assert set(rows) == set(feed)
        # The agent's screenshot of the running preview, loaded through the page's token.
        page.wait_for_function(
            "() => { const i = document.querySelector('#timeline img.screenshot');"
            " return i !== null && i.complete && i.naturalWidth > 0; }",
            timeout=30_000,
        )
        width = page.eval_on_selector("#timeline img.screenshot", "i => i.naturalWidth")
        assert width == 1280
    finally:
        context.close()


def test_cancel_works_from_the_page_and_operators_see_the_running_build(
    stack: Stack, browser: Browser, http: httpx.Client
) -> None:
    founder = _founder(http)
    build_id = _start_build(http, founder)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(_page_url(http, founder, build_id, stack.gateway_url))
        page.wait_for_selector("#timeline li.kind-tool", timeout=60_000)

        # The operator view, in another browser: signed in with the admin token by the form.
        operator = browser.new_context().new_page()
        operator.goto(stack.gateway_url + "/app/admin")
        operator.get_by_label("Admin token").fill("dev-admin-token")
        operator.get_by_label("Admin token").press("Enter")
        row = operator.locator(f"tr[data-build-id='{build_id}']")
        row.wait_for(timeout=15_000)
        expect(row.locator(".badge")).to_have_text(re.compile("running|finishing"))
        assert founder["user_id"][:8] in row.inner_text()
        operator.context.close()

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Cancel this build").click()
        page.wait_for_selector("#connection[data-state=ended]", timeout=60_000)
        expect(page.locator("#status")).to_have_text("cancelled")
        expect(page.locator("#outcome-text")).to_have_text("Cancelled.")
        expect(page.locator("#cancel")).to_be_hidden()
        last = page.locator("#timeline li.kind-status .badge").last
        assert last.inner_text() == "cancelled"

        # The founder's list of builds, by the page's own navigation.
        page.get_by_role("link", name="Your builds").click()
        listed = page.locator(f"#rows tr:has(a[href='/app/builds/{build_id}'])")
        listed.wait_for(timeout=15_000)
        expect(listed.locator(".badge")).to_have_text("cancelled")
    finally:
        context.close()
    final = http.get(f"/v1/builds/{build_id}", headers=founder["auth"]).json()
    assert final["status"] == "cancelled"


_TRY_TOKEN = """async ([mine, theirs]) => {
  const token = sessionStorage.getItem("cofounder.token");
  const issued = await fetch("/v1/stream-tokens", {
    method: "POST",
    headers: {Authorization: `Bearer ${token}`, "Content-Type": "application/json"},
    body: JSON.stringify({build_id: mine}),
  });
  const stream = (await issued.json()).token;
  const refused = await fetch(`/v1/builds/${theirs}/events?token=${stream}`);
  const opened = await new Promise((resolve) => {
    const source = new EventSource(`/v1/builds/${theirs}/events?token=${stream}`);
    source.onopen = () => { source.close(); resolve(true); };
    source.onerror = () => { source.close(); resolve(false); };
  });
  return {stream, status: refused.status, type: (await refused.json()).type, opened};
}"""

_USE_TOKEN = """async ([build, stream]) => {
  const controller = new AbortController();
  const response = await fetch(`/v1/builds/${build}/events?token=${stream}`,
                               {signal: controller.signal});
  const type = response.ok ? null : (await response.json()).type;
  controller.abort();
  return {status: response.status, type};
}"""


def test_a_founders_stream_token_is_refused_for_another_founders_build_and_expires(
    stack: Stack, browser: Browser, http: httpx.Client
) -> None:
    alice, bob = _founder(http), _founder(http)
    alices, bobs = _start_build(http, alice), _start_build(http, bob)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(_page_url(http, alice, alices, stack.gateway_url))
        page.wait_for_selector("#connection[data-state=live]", timeout=30_000)
        tried = page.evaluate(_TRY_TOKEN, [alices, bobs])
        assert (tried["status"], tried["type"], tried["opened"]) == (
            403,
            "token_not_for_build",
            False,
        )
        fresh = page.evaluate(_USE_TOKEN, [alices, tried["stream"]])
        assert fresh["status"] == 200
        time.sleep(STREAM_TOKEN_TTL_S + 1.5)
        late = page.evaluate(_USE_TOKEN, [alices, tried["stream"]])
        assert (late["status"], late["type"]) == (401, "token_expired")
    finally:
        context.close()
    # Bob's build is not Alice's to cancel either (the page's POSTs carry her bearer only).
    refused = http.post(f"/v1/builds/{bobs}/cancel", headers=alice["auth"])
    assert refused.status_code == 404
    for build, founder in ((alices, alice), (bobs, bob)):  # no need to finish them
        http.post(f"/v1/builds/{build}/cancel", headers=founder["auth"])
