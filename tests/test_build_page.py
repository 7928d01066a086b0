"""The build page in a real browser: Debian's headless Chromium, driven by Playwright (which
downloads no browser here: it launches the machine's ``chromium``), against the whole pipeline
as processes (the scripted model, every service).

- a demo build is followed live from queued to completed, and a connection cut mid-build (every
  socket between browser and gateway closed, new ones refused for a while) resumes with no row
  twice and none missing: the rows are exactly the build's feed; tool rows show their input, a
  failing call (the transcript here is the demo's with one failing command added) its error, and
  the overview the build's final counters;
- a founder whose day's budget is spent sees the build sleep (until when, from which checkpoint)
  and, after an admin's top-up, wake (why) and complete; the operator view, as it opens, lists
  that sleeping build and another founder's failed one;
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
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cofounder_contracts.streams import build_feed_key
from cofounder_domain.budget import days_left
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
#: The command the module's transcript adds to the demo's second turn: it fails (exit status 2),
#: and the agent goes on.
FAILING_COMMAND = "ls no-such-file"
#: Statuses of builds still under way (the operator view's "active" group).
ACTIVE = ("queued", "assembling", "running", "finishing")


def _transcript(folder: Path) -> Path:
    """The demo transcript with a failing bash call in its second turn (its next turn has no
    ``on_error`` reply: the build goes on as the demo's)."""
    demo = resources.files("cofounder_scripted_model").joinpath("transcripts", "demo-webapp.yaml")
    script = yaml.safe_load(demo.read_text(encoding="utf-8"))
    script["name"] = "demo-webapp-with-a-failing-call"
    assert "on_error" not in script["turns"][2]
    script["turns"][1]["tools"].append({"name": "bash", "input": {"command": FAILING_COMMAND}})
    path = folder / "transcript.yaml"
    path.write_text(yaml.safe_dump(script, sort_keys=False), encoding="utf-8")
    return path


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
    # The bootstrapper plan gives 1 micro a day (the first model call spends it: the build
    # sleeps); founders are moved to the founder plan (``_founder``), which no build exhausts.
    allowance = {"bootstrapper": days_left(datetime.now(UTC).date()), "founder": 10**12}
    with (
        migrated_database(database_url) as url,
        running_stack(
            root,
            database_url=url,
            builds=4,
            latency_ms=LATENCY_MS,
            transcript=str(_transcript(root)),
            STREAM_TOKEN_TTL_S=str(STREAM_TOKEN_TTL_S),
            PLANS_MONTHLY_ALLOWANCE_MICROS=json.dumps({"pro": 10**12, **allowance}),
            WAKE_INTERVAL_S="0.2",
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


def _founder(http: httpx.Client, *, tier: str = "founder") -> dict[str, Any]:
    """A demo founder on ``tier`` (moved there before any build, so the day's budget is the
    tier's from its first model call)."""
    seeded = http.post("/v1/admin/demo", headers=ADMIN)
    assert seeded.status_code == 201, seeded.text
    founder: dict[str, Any] = seeded.json()
    founder["auth"] = {"Authorization": f"Bearer {founder['token']}"}
    if tier != "bootstrapper":
        moved = http.put(
            f"/v1/admin/users/{founder['user_id']}/tier", headers=ADMIN, json={"tier": tier}
        )
        assert moved.status_code == 200, moved.text
    return founder


def _build(http: httpx.Client, founder: dict[str, Any], build_id: str) -> dict[str, Any]:
    got = http.get(f"/v1/builds/{build_id}", headers=founder["auth"])
    assert got.status_code == 200, got.text
    build: dict[str, Any] = got.json()
    return build


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


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, type, data) of each message of an SSE stream."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = fields.get(name, "") + value if name == "data" else value


def _feed(
    http: httpx.Client, founder: dict[str, Any], build_id: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """Every message (id, type, data) of the (ended) build's feed, with the founder's bearer
    token: to the build's end, then what came after it (the stream stops at the end; the next
    read goes on)."""
    messages: list[tuple[str, str, dict[str, Any]]] = []
    while True:
        ids = [entry_id for entry_id, _, _ in messages if entry_id]
        headers = {**founder["auth"], **({"Last-Event-ID": ids[-1]} if ids else {})}
        url = f"/v1/builds/{build_id}/events"
        with http.stream("GET", url, headers=headers) as stream:
            got = [message for message in _sse(stream.iter_lines()) if message[0]]
        if not got:
            return messages
        messages += got


def _feed_ids(http: httpx.Client, founder: dict[str, Any], build_id: str) -> list[str]:
    """Every SSE id of the (ended) build's feed."""
    return [entry_id for entry_id, _, _ in _feed(http, founder, build_id)]


def _first(http: httpx.Client, founder: dict[str, Any], build_id: str, kind: str) -> dict[str, Any]:
    """The data of the first ``kind`` event of a build's feed, live: read until it comes."""
    url = f"/v1/builds/{build_id}/events"
    with http.stream("GET", url, headers=founder["auth"]) as stream:
        for _, type_, data in _sse(stream.iter_lines()):
            if type_ == kind:
                return data
    raise AssertionError(f"the build's feed ended with no {kind}")


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
        messages = _feed(http, founder, build_id)
        feed = [entry_id for entry_id, _, _ in messages]
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

        # Each tool row shows what the tool was given: the first wrote the app's server.
        called = [data for _, kind, data in messages if kind == "tool.called"]
        completed = {d["tool_use_id"]: d for _, k, d in messages if k == "tool.completed"}
        assert called[0]["name"] == "str_replace_based_edit_tool"
        assert called[0]["input_preview"].startswith('{"command": "create"')
        assert tool.locator(".what strong").text_content() == called[0]["name"]
        assert tool.locator("code.input").text_content() == called[0]["input_preview"]
        assert tool.locator(".badge").count() == 0  # it succeeded: no error badge

        # The failing call: its row, and only its, is marked failed, with its error output.
        failing = [d for d in called if FAILING_COMMAND in d["input_preview"]]
        assert len(failing) == 1
        outcome = completed[failing[0]["tool_use_id"]]
        assert outcome["is_error"] is True
        assert [d["tool_use_id"] for d in completed.values() if d["is_error"]] == [
            failing[0]["tool_use_id"]
        ]
        broken = page.locator("#timeline li.kind-tool.failed")
        expect(broken).to_have_count(1)
        assert broken.locator("code.input").text_content() == failing[0]["input_preview"]
        expect(broken.locator(".badge")).to_have_text("error")
        expect(broken.locator("details summary")).to_have_text("Error output")
        assert broken.locator("details pre").text_content() == outcome["output_preview"]
        assert "no-such-file" in outcome["output_preview"]
        assert "exit status 2" in outcome["output_preview"]
        assert broken.locator(".duration").inner_text().endswith(("ms", " s"))

        # The overview's counters are the build's, once it is over.
        final = _build(http, founder, build_id)
        assert final["iterations"] > 0
        assert final["input_tokens"] > 0
        assert final["output_tokens"] > 0
        expect(page.locator("#iterations")).to_have_text(f"{final['iterations']:,}")
        expect(page.locator("#tool-calls")).to_have_text(f"{final['tool_calls']:,}")
        expect(page.locator("#tokens")).to_have_text(
            f"{final['input_tokens']:,} in / {final['output_tokens']:,} out"
        )

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


def test_a_build_sleeps_and_wakes_on_the_page_and_operators_see_sleeping_and_failed_builds(
    stack: Stack, browser: Browser, http: httpx.Client
) -> None:
    # No build in flight: the model's refusal queued below goes to this test's first build.
    def quiet() -> bool:
        active = http.get("/v1/admin/builds", params=[("status", s) for s in ACTIVE], headers=ADMIN)
        return active.status_code == 200 and active.json()["items"] == []

    wait_for("no build in flight", quiet, stack, timeout=240)

    # One founder's build fails: the model refuses its first call (a 400 is not retried).
    failing = _founder(http)
    refusal = httpx.post(
        stack.env["ANTHROPIC_BASE_URL"] + "/_control/faults",
        json=[{"status": 400, "message": "prompt is too long: the test refuses it"}],
        timeout=10,
    )
    refusal.raise_for_status()
    failed_id = _start_build(http, failing)
    wait_for(
        "the build to fail",
        lambda: _build(http, failing, failed_id)["status"] == "failed",
        stack,
        timeout=120,
    )
    failed = _build(http, failing, failed_id)
    assert "prompt is too long" in failed["error"]

    # Another's (on the bootstrapper plan: 1 micro a day) sleeps on its spent budget.
    sleeper = _founder(http, tier="bootstrapper")
    sleeping_id = _start_build(http, sleeper)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    operator_context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(_page_url(http, sleeper, sleeping_id, stack.gateway_url))
        page.wait_for_selector("#connection[data-state=live]", timeout=30_000)
        slept = _first(http, sleeper, sleeping_id, "agent.sleeping")
        sleep_row = page.locator("#timeline li.kind-sleep")
        sleep_row.wait_for(timeout=120_000)
        expect(sleep_row).to_have_count(1)
        # When it slept, why, until when at the latest, and from which checkpoint.
        assert sleep_row.locator("time").get_attribute("datetime") == slept["occurred_at"]
        wakes_at = page.evaluate("iso => new Date(iso).toLocaleString()", slept["resets_at"])
        expect(sleep_row.locator(".what")).to_have_text("Sleeping")
        expect(sleep_row.locator(".note")).to_have_text(
            f"today's budget is spent; wakes at {wakes_at} at the latest "
            f"(checkpoint {slept['checkpoint_seq']})"
        )
        expect(page.locator("#status")).to_have_text("sleeping")
        expect(page.locator("#budget-text")).to_contain_text("model calls paused")
        expect(page.locator("#timeline li.kind-wake")).to_have_count(0)

        # The operator view, as it opens (its default filter): the sleeping build and the
        # failed one, of two founders, with the failure's reason; nothing that ended otherwise.
        operator = operator_context.new_page()
        operator.goto(stack.gateway_url + "/app/admin")
        operator.get_by_label("Admin token").fill("dev-admin-token")
        operator.get_by_label("Admin token").press("Enter")
        asleep = operator.locator(f"tr[data-build-id='{sleeping_id}']")
        asleep.wait_for(timeout=15_000)
        checked = operator.eval_on_selector_all(
            "input[name=group]:checked", "boxes => boxes.map(b => b.value)"
        )
        assert checked == ["active", "sleeping", "failed"]
        expect(asleep.locator(".badge")).to_have_text("sleeping")
        assert sleeper["user_id"][:8] in asleep.inner_text()
        broken = operator.locator(f"tr[data-build-id='{failed_id}']")
        expect(broken.locator(".badge")).to_have_text("failed")
        assert failing["user_id"][:8] in broken.inner_text()
        expect(broken.locator("td").last).to_have_text(failed["error"])
        shown = operator.eval_on_selector_all(
            "#rows .badge", "badges => badges.map(b => b.textContent)"
        )
        assert set(shown) <= {*ACTIVE, "sleeping", "failed"}, shown
        # Its boxes filter: without "sleeping", the sleeping build goes, the failed one stays.
        operator.get_by_label("sleeping").uncheck()
        operator.get_by_role("button", name="Show").click()
        expect(asleep).to_have_count(0)
        expect(broken).to_have_count(1)

        # An admin's top-up wakes it: the page says why, and when, and it completes.
        topped = http.post(
            f"/v1/admin/users/{sleeper['user_id']}/top-ups",
            headers=ADMIN,
            json={"amount_micros": 10_000_000},
        )
        assert topped.status_code == 202, topped.text
        resumed_row = page.locator("#timeline li.kind-wake", has_text="Resumed")
        resumed_row.wait_for(timeout=120_000)
        expect(resumed_row.locator(".note")).to_have_text(
            f"reason: wake:top_up; from checkpoint {slept['checkpoint_seq']}"
        )
        woken_row = page.locator("#timeline li.kind-wake", has_text="Woken")
        woken_row.wait_for(timeout=60_000)
        expect(woken_row.locator(".note")).to_have_text("reason: top_up")
        page.wait_for_selector("#connection[data-state=ended]", timeout=240_000)
        expect(page.locator("#status")).to_have_text("ready")
        expect(page.locator("#outcome-text")).to_have_text("Completed: version 1.")
        expect(page.locator("#timeline li.kind-sleep")).to_have_count(1)
        expect(page.locator("#timeline li.kind-wake")).to_have_count(2)

        # The wake rows' times are the events', and they come after the sleep's.
        messages = _feed(http, sleeper, sleeping_id)
        [resumed] = [d for _, kind, d in messages if kind == "agent.resumed"]
        [woken] = [d for _, kind, d in messages if kind == "budget.wake"]
        assert resumed_row.locator("time").get_attribute("datetime") == resumed["occurred_at"]
        assert woken_row.locator("time").get_attribute("datetime") == woken["occurred_at"]
        woke_at = page.evaluate("iso => new Date(iso).toLocaleTimeString()", resumed["occurred_at"])
        expect(resumed_row.locator("time")).to_have_text(woke_at)
        kinds = page.eval_on_selector_all(
            "#timeline li.kind-sleep, #timeline li.kind-wake",
            "rows => rows.map(r => r.className)",
        )
        assert "kind-sleep" in kinds[0]
        assert datetime.fromisoformat(resumed["occurred_at"]) > datetime.fromisoformat(
            slept["occurred_at"]
        )
    finally:
        operator_context.close()
        context.close()


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
