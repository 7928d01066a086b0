"""Following a build's events (the gateway's SSE stream, read by ``cofounder_client``) as one
human-readable line each."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import typer

from cofounder_cli.money import money
from cofounder_client import CofounderClient, CofounderError, NetworkError

__all__ = ["END_EVENTS", "Progress", "after_end", "events", "follow", "succeeded"]

#: The events after which a build's stream ends.
END_EVENTS: Final = frozenset({"build.completed", "build.failed", "build.summary"})


class Progress:
    """Prints a build's events as one line each."""

    def __init__(
        self, usage: Callable[[], dict[str, Any] | None] | None = None, base_url: str = ""
    ) -> None:
        """``usage`` returns the founder's ``GET /v1/usage`` (None when unavailable): each
        iteration's line then shows the day's spend against the budget. ``base_url``: the
        gateway's, put before a screenshot's reference when it is the gateway's route."""
        self.started = time.monotonic()
        self.base_url = base_url.rstrip("/")
        self.tokens_in = 0
        self.tokens_out = 0
        self._usage = usage

    def _budget(self) -> str:
        today = self._usage() if self._usage else None
        if not today:
            return ""
        day = today["today"]
        return f"; budget {money(day['spent_micros'])} of {money(day['budget_micros'])} today"

    def line(self, text: str) -> None:
        typer.echo(f"{time.monotonic() - self.started:6.1f}s  {text}")

    def show(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "agent.iteration_completed":
            self.tokens_in += data.get("input_tokens", 0)
            self.tokens_out += data.get("output_tokens", 0)
            self.line(
                f"iteration {data['iteration']}: {data['tool_calls']} tool calls so far, "
                f"tokens {self.tokens_in:,} in / {self.tokens_out:,} out{self._budget()}"
            )
            return
        if kind == "agent.screenshot_taken":
            url = str(data["url"])
            where = f"{self.base_url}{url}" if url.startswith("/") else url
            until = f" (until {data['expires_at']})" if data.get("expires_at") else ""
            self.line(f"  screenshot {data.get('width')}x{data.get('height')}: {where}{until}")
            return
        describe = _LINES.get(kind)
        if describe is not None:
            self.line(describe(data))


def _tool_completed(data: dict[str, Any]) -> str:
    mark = "error" if data["is_error"] else "ok"
    return f"  <- {data['name']} {mark} ({data['duration_ms']} ms): {data['output_preview'][:70]}"


def _snapshot(data: dict[str, Any]) -> str:
    if data.get("skipped"):
        return f"snapshot skipped: {data.get('skipped_reason')}"
    return f"snapshot v{data['version']}: {data['files']} files"


#: One line per event type a founder cares about (the rest are not shown).
_LINES: Final[dict[str, Callable[[dict[str, Any]], str]]] = {
    "build.status_changed": lambda d: f"status: {d['status']}",
    "tool.called": lambda d: f"  -> {d['name']}: {d['input_preview'][:90]}",
    "tool.completed": _tool_completed,
    "budget.warning": lambda d: (
        f"budget: {money(d['spent_micros'])} of today's {money(d['budget_micros'])} spent (80%)"
    ),
    "budget.exhausted": lambda d: f"budget: today's budget is spent; it resets at {d['resets_at']}",
    "budget.wake": lambda d: f"budget: woken ({d['reason']})",
    "agent.sleeping": lambda d: f"asleep: the daily budget is spent until {d['resets_at']}",
    "agent.resumed": lambda d: f"resumed ({d.get('reason')})",
    "snapshot.completed": _snapshot,
    "snapshot.failed": lambda d: f"snapshot failed (the build goes on): {d['reason']}",
    "build.completed": lambda d: f"completed: version {d['build_version']}: {d['summary']}",
    "build.failed": lambda d: f"failed: {d['reason']}",
    # A finished build whose feed is gone: the gateway sends its row instead of its events.
    "build.summary": lambda d: (
        f"finished: {d['status']}{': ' + d['error'] if d.get('error') else ''} "
        "(its event history is no longer kept)"
    ),
}


def succeeded(end: dict[str, Any]) -> bool:
    """Whether the end :func:`follow` returned says the build completed: its
    ``build.completed``, or the summary of a finished build whose events are gone."""
    kind = end.get("kind")
    return kind == "build.completed" or (kind == "build.summary" and end.get("status") == "ready")


def events(
    client: CofounderClient,
    build_id: str,
    *,
    after: str | None = None,
    on_open: Callable[[], None] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The build's events from the start (or after the SSE id ``after``); each event's data
    carries its SSE id as ``_sse_id``. ``on_open``: called once the stream is open."""
    for event in client.events(build_id, last_event_id=after, on_open=on_open):
        yield event.type, {**event.data, "_sse_id": event.id}


def _usage(client: CofounderClient) -> dict[str, Any] | None:
    """The founder's usage today (``GET /v1/usage``), None when it cannot be had: the budget
    on the progress lines is a nicety."""
    try:
        return client.usage(days=1).raw
    except (CofounderError, KeyError, TypeError, ValueError):
        return None


#: How long a stream must have stayed open to count as alive: the gateway's keep-alive interval.
_ALIVE_S: Final = 15.0
#: Waits between reconnects to a build's event stream; the last repeats.
_BACKOFF_S: Final = (0.5, 1.0, 2.0, 4.0, 8.0)


def _over(client: CofounderClient, build_id: str) -> bool:
    """Whether the build has ended (so its stream, once drained, has nothing more to say)."""
    try:
        return client.get_build(build_id).ended
    except (CofounderError, KeyError, TypeError, ValueError):
        return False


def follow(
    client: CofounderClient,
    build_id: str,
    *,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    give_up_after_s: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Print (or hand to ``on_event``) each event until the build ends; return its end event
    as ``{"kind": ..., **data}`` (empty when the stream closed without one, e.g. cancelled).

    A stream that is cut (a proxy, a gateway restart, a Redis hiccup) is reopened after the
    last event seen (``Last-Event-ID``), with backoff and a "reconnecting" line on stderr, so
    nothing is missed or shown twice; it gives up after ``give_up_after_s`` in which no stream
    could be opened (:class:`NetworkError`). A quiet build (asleep on its budget, a long
    install) sends keep-alives only: the time counts from the last stream opened, not from
    the last event. The gateway's refusal (:class:`ApiError`: 404, 401, ...) is raised at once.
    """
    show = on_event or Progress(usage=lambda: _usage(client), base_url=client.base_url).show
    after: str | None = None
    attempt = 0
    heard_at = clock()  # the gateway's last sign of life: an event, or a stream open till then
    opened_at: float | None = None

    def opened() -> None:
        nonlocal opened_at
        opened_at = clock()

    while True:
        try:
            for kind, data in events(client, build_id, after=after, on_open=opened):
                attempt, heard_at = 0, clock()
                after = data.get("_sse_id") or after
                show(kind, data)
                if kind in END_EVENTS:
                    return {"kind": kind, **data}
                if kind == "build.status_changed" and data.get("status") == "cancelled":
                    return {"kind": kind, **data}
            why = "the stream closed before the build ended"
        except NetworkError as exc:
            why = exc.reason
        # A stream that stayed open for a keep-alive's interval was alive until now (a quiet
        # build); one closed at once (a bare retry hint while the gateway's event store is
        # down) is no sign of the build's progress, and counts toward giving up.
        if opened_at is not None and clock() - opened_at >= _ALIVE_S:
            heard_at = clock()
        opened_at = None
        if _over(client, build_id):
            return {}
        if clock() - heard_at > give_up_after_s:
            raise NetworkError(
                client.base_url, f"no stream could be opened for {give_up_after_s:g} s ({why})"
            )
        wait = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
        attempt += 1
        typer.echo(f"reconnecting to the build's events in {wait:g} s ({why})", err=True)
        sleep(wait)


def after_end(
    client: CofounderClient, build_id: str, after: str
) -> list[tuple[str, dict[str, Any]]]:
    """Print and return the build's events after its end (SSE id ``after``): what the pipeline
    still did for it, such as storing the final snapshot, which the runner does not wait for.
    Call it once the pipeline is at rest (the build is over, so the stream does not block)."""
    progress = Progress()
    later = list(events(client, build_id, after=after))
    for kind, data in later:
        progress.show(kind, data)
    return later
