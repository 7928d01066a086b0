"""Prometheus metrics of the stream runtime.

Names are part of the operations contract (dashboards and alert rules use them): rename nothing.
Per-message code touches pre-bound children only (``StreamMetrics.for_type``), so a handled event
costs two counter increments and a histogram observation, not label lookups.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "EVENTS_DEAD_LETTERED",
    "EVENTS_FAILED",
    "EVENTS_HANDLED",
    "EVENTS_IGNORED",
    "EVENTS_RETRIED",
    "GROUP_LAG",
    "GROUP_PENDING",
    "HANDLER_SECONDS",
    "OWNERSHIP_LOST",
    "StreamMetrics",
    "TypeMetrics",
]

_LABELS = ("stream", "group", "type")

EVENTS_HANDLED = Counter(
    "cofounder_events_handled_total", "Events whose handler succeeded and were acked.", _LABELS
)
EVENTS_FAILED = Counter("cofounder_events_failed_total", "Handler attempts that raised.", _LABELS)
EVENTS_RETRIED = Counter(
    "cofounder_events_retried_total", "Failed events scheduled for another attempt.", _LABELS
)
EVENTS_DEAD_LETTERED = Counter(
    "cofounder_events_dead_lettered_total",
    "Events moved to the dead-letter stream (failing, undecodable or over-delivered).",
    _LABELS,
)
EVENTS_IGNORED = Counter(
    "cofounder_events_ignored_total",
    "Entries of a type this group has no handler for; acked without effect.",
    _LABELS,
)
HANDLER_SECONDS = Histogram(
    "cofounder_handler_seconds",
    "Handler latency of successful attempts.",
    _LABELS,
    buckets=(
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        300,
        1800,
    ),
)
OWNERSHIP_LOST = Counter(
    "cofounder_entries_lost_total",
    "In-flight entries claimed away by another consumer (this one stalled past min_idle).",
    ("stream", "group"),
)
GROUP_PENDING = Gauge(
    "cofounder_group_pending",
    "Entries delivered to the group and not yet acked (XINFO GROUPS).",
    ("stream", "group"),
)
GROUP_LAG = Gauge(
    "cofounder_group_lag",
    "Entries in the stream not yet delivered to the group (XINFO GROUPS).",
    ("stream", "group"),
)


@dataclass(frozen=True, slots=True)
class TypeMetrics:
    """The metric children of one (stream, group, type)."""

    handled: Counter
    failed: Counter
    retried: Counter
    dead_lettered: Counter
    ignored: Counter
    seconds: Histogram


class StreamMetrics:
    """Metric children of one (stream, group), bound per event type on first use."""

    __slots__ = ("_by_type", "group", "lost", "stream")

    def __init__(self, *, stream: str, group: str) -> None:
        self.stream = stream
        self.group = group
        self.lost = OWNERSHIP_LOST.labels(stream, group)
        self._by_type: dict[bytes, TypeMetrics] = {}

    def for_type(self, type_: bytes) -> TypeMetrics:
        """The children for ``type_`` (the raw ``type`` field; unknown types count as such)."""
        found = self._by_type.get(type_)
        if found is None:
            labels = (self.stream, self.group, type_.decode(errors="replace"))
            found = TypeMetrics(
                handled=EVENTS_HANDLED.labels(*labels),
                failed=EVENTS_FAILED.labels(*labels),
                retried=EVENTS_RETRIED.labels(*labels),
                dead_lettered=EVENTS_DEAD_LETTERED.labels(*labels),
                ignored=EVENTS_IGNORED.labels(*labels),
                seconds=HANDLER_SECONDS.labels(*labels),
            )
            self._by_type[type_] = found
        return found

    def set_group_state(self, *, pending: int, lag: int | None) -> None:
        """Record the group's pending count and lag as read from ``XINFO GROUPS``."""
        GROUP_PENDING.labels(self.stream, self.group).set(pending)
        if lag is not None:
            GROUP_LAG.labels(self.stream, self.group).set(lag)
