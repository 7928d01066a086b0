"""Following a build reconnects when its stream is cut: after the last event seen
(``Last-Event-ID``), with a "reconnecting" line, nothing missed and nothing shown twice.
The gateway side (a real stream cut by a dead Redis) is in tests/test_live_feed.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cofounder_cli.progress import Progress, follow, succeeded
from cofounder_client import CofounderClient, NetworkError

BUILD = "0195a0e2-aaaa-7000-8000-0000000000f0"
SSE = {"content-type": "text/event-stream"}


def _row(status: str, **fields: Any) -> dict[str, Any]:
    """``GET /v1/builds/{id}``'s body."""
    base = f"/v1/builds/{BUILD}"
    return {
        "id": BUILD,
        "project_id": "0195a0e2-aaaa-7000-8000-0000000000b0",
        "status": status,
        "goal": "g",
        "tier": "bootstrapper",
        "build_version": None,
        "preview_url": None,
        "error": None,
        "iterations": 0,
        "tool_calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "created_at": "2026-03-02T09:15:04Z",
        "updated_at": "2026-03-02T09:15:04Z",
        "finished_at": None,
        "links": {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel"},
        **fields,
    }


def _client(handler: Any) -> CofounderClient:
    return CofounderClient("http://gw", "t", transport=httpx.MockTransport(handler))


def _event(sse_id: str, kind: str, **data: Any) -> bytes:
    return f"id: {sse_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


class _Cut(httpx.SyncByteStream):
    """A body that sends ``chunks`` and then breaks, as a proxy or a dying gateway would."""

    def __init__(self, chunks: list[bytes], *, cut: bool) -> None:
        self.chunks = chunks
        self.cut = cut

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.cut:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def test_a_cut_stream_is_resumed_after_the_last_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            return httpx.Response(200, json=_row("running"))
        after = request.headers.get("last-event-id")
        asked.append(after)
        if after is None:
            body = _event("1-0", "build.status_changed", status="running")
            body += _event("2-0", "agent.iteration_completed", iteration=1, tool_calls=1)
            return httpx.Response(200, headers=SSE, stream=_Cut([body], cut=True))
        if len(asked) == 2:  # the gateway answers the reconnect, then closes (a retry hint)
            return httpx.Response(200, headers=SSE, stream=_Cut([b"retry: 2000\n\n"], cut=False))
        body = _event("3-0", "agent.iteration_completed", iteration=2, tool_calls=2)
        body += _event("4-0", "build.completed", build_version=1, summary="ok", preview_url="u")
        return httpx.Response(200, headers=SSE, stream=_Cut([body], cut=False))

    seen: list[tuple[str, str]] = []
    with _client(handler) as client:
        end = follow(
            client,
            BUILD,
            on_event=lambda kind, data: seen.append((kind, data["_sse_id"])),
            sleep=lambda _: None,
        )

    assert end["kind"] == "build.completed"
    assert [sse_id for _, sse_id in seen] == ["1-0", "2-0", "3-0", "4-0"]
    assert asked == [None, "2-0", "2-0"]
    err = capsys.readouterr().err
    assert err.count("reconnecting to the build's events") == 2
    assert "peer closed connection" in err


def test_a_stream_of_a_finished_build_is_not_reopened_forever() -> None:
    calls = {"events": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            calls["events"] += 1
            return httpx.Response(200, headers=SSE, stream=_Cut([], cut=False))
        return httpx.Response(200, json=_row("cancelled"))

    with _client(handler) as client:
        assert follow(client, BUILD, on_event=lambda *_: None, sleep=lambda _: None) == {}
    assert calls["events"] == 1


def test_it_gives_up_when_nothing_comes_for_too_long() -> None:
    clock = iter(float(n) for n in range(0, 10_000, 100))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            raise httpx.ConnectError("connection refused")
        raise httpx.ConnectError("connection refused")

    with (
        _client(handler) as client,
        pytest.raises(NetworkError, match="no stream could be opened for 300 s"),
    ):
        follow(
            client, BUILD, on_event=lambda *_: None, sleep=lambda _: None, clock=lambda: next(clock)
        )


def test_a_quiet_build_s_stream_cut_after_a_long_silence_is_reopened() -> None:
    """A build asleep on its budget (or in a long install) sends keep-alives only. Its stream,
    open for longer than the give-up time and then cut once, is reopened: the give-up counts
    the time no stream could be opened, not the time since the last event."""
    now = [0.0]
    asked: list[str | None] = []

    class _QuietThenCut(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b": keep-alive\n\n"
            now[0] += 400  # keep-alives for 400 s, then the gateway restarts
            raise httpx.RemoteProtocolError("peer closed connection")

    def handler(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            return httpx.Response(200, json=_row("sleeping"))
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:
            body = _event("1-0", "agent.sleeping", resets_at="2026-03-03T00:00:00Z")
            return httpx.Response(200, headers=SSE, stream=_Cut([body], cut=False))
        if len(asked) == 2:
            return httpx.Response(200, headers=SSE, stream=_QuietThenCut())
        body = _event("2-0", "build.completed", build_version=1, summary="ok", preview_url="u")
        return httpx.Response(200, headers=SSE, stream=_Cut([body], cut=False))

    with _client(handler) as client:
        end = follow(
            client, BUILD, on_event=lambda *_: None, sleep=lambda _: None, clock=lambda: now[0]
        )
    assert end["kind"] == "build.completed"
    assert asked == [None, "1-0", "1-0"]


def test_a_stream_closed_at_once_with_a_retry_hint_still_gives_up_in_time() -> None:
    """The gateway answers, but its event store is down: each stream is closed at once with a
    retry hint. That is no sign of the build: following gives up after the usual time."""
    now = [0.0]

    def handler(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            return httpx.Response(200, json=_row("running"))
        now[0] += 30
        return httpx.Response(200, headers=SSE, stream=_Cut([b"retry: 2000\n\n"], cut=False))

    with (
        _client(handler) as client,
        pytest.raises(NetworkError, match="no stream could be opened for 300 s"),
    ):
        follow(client, BUILD, on_event=lambda *_: None, sleep=lambda _: None, clock=lambda: now[0])


@pytest.mark.parametrize(("status", "ok"), [("ready", True), ("failed", False)])
def test_a_finished_build_whose_events_are_gone_ends_with_its_summary(
    capsys: pytest.CaptureFixture[str], status: str, ok: bool
) -> None:
    """The gateway answers such a build with one ``build.summary`` (its row) and closes."""

    def handler(request: httpx.Request) -> httpx.Response:
        row = _row(status, error=None if ok else "stuck")
        if not request.url.path.endswith("/events"):
            return httpx.Response(200, json=row)
        summary = _Cut([_event("0-1", "build.summary", **row)], cut=False)
        return httpx.Response(200, headers=SSE, stream=summary)

    with _client(handler) as client:
        end = follow(client, BUILD, sleep=lambda _: None)
    assert end["kind"] == "build.summary"
    assert succeeded(end) is ok
    out = capsys.readouterr().out
    assert f"finished: {status}" in out
    assert "no longer kept" in out


def test_a_screenshot_shows_its_reference(capsys: pytest.CaptureFixture[str]) -> None:
    """``cofounder dev``'s progress: the gateway's route in full (the folder store), a presigned
    URL as it is, with when it stops working."""
    progress = Progress(base_url="http://127.0.0.1:8000/")
    path = f"/v1/builds/{BUILD}/screenshots/00007-toolu_1.png"
    shot = {"url": path, "width": 1280, "height": 800, "expires_at": None}
    progress.show("agent.screenshot_taken", shot)
    presigned = "https://bucket.s3.amazonaws.com/k.png?X-Amz-Signature=x"
    until = "2026-03-09T09:15:04Z"
    progress.show("agent.screenshot_taken", {**shot, "url": presigned, "expires_at": until})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"screenshot 1280x800: http://127.0.0.1:8000{path}")
    assert lines[1].endswith(f"screenshot 1280x800: {presigned} (until {until})")
