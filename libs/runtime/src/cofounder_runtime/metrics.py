"""Prometheus metrics of the stream runtime.

Names are part of the operations contract (dashboards and alert rules use them): rename nothing.

Per-event metrics are plain integers on a :class:`TypeMetrics` object (one per stream, group and
event type), exported by one custom collector at scrape time. A ``prometheus_client`` counter
increment takes a lock and a histogram observation walks its buckets under one; at 100,000+ events
a second per process that was a fifth of the consumer's time. Here an event costs two integer
additions and a ``bisect``. The handler runs on the event loop's thread and the scrape on the
exporter's; they share only integers, and a scrape that reads a histogram while it is being
updated may be one observation behind in one bucket, which Prometheus tolerates.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Final

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "GROUP_LAG",
    "GROUP_PENDING",
    "HANDLER_BUCKETS",
    "LATENCY_BUCKETS",
    "OWNERSHIP_LOST",
    "PROCESSED_EVENTS_PRUNED",
    "StreamMetrics",
    "TypeMetrics",
    "cumulative_buckets",
]

#: Upper bounds (seconds) of a request latency histogram: a millisecond to half a minute.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: Upper bounds (seconds) of the handler latency histogram: the request ladder, widened to
#: sub-millisecond handlers and up to a whole agent loop (half an hour).
HANDLER_BUCKETS: Final = (0.0005, *LATENCY_BUCKETS, 60.0, 300.0, 1800.0)

OWNERSHIP_LOST = Counter(
    "cofounder_entries_lost_total",
    "In-flight entries claimed away by another consumer (this one stalled past min_idle).",
    ("stream", "group"),
)
PROCESSED_EVENTS_PRUNED = Counter(
    "cofounder_processed_events_pruned_total",
    "Rows of processed_events deleted for being older than the retention.",
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


class TypeMetrics:
    """Counters and the latency histogram of one (stream, group, type)."""

    __slots__ = (
        "buckets",
        "dead_lettered",
        "failed",
        "handled",
        "ignored",
        "labels",
        "retried",
        "seconds_sum",
    )

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.handled = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.ignored = 0
        self.buckets = [0] * (len(HANDLER_BUCKETS) + 1)  # the last one is +Inf
        self.seconds_sum = 0.0

    def observe_success(self, seconds: float) -> None:
        """A handler succeeded after ``seconds``."""
        self.handled += 1
        self.buckets[bisect_left(HANDLER_BUCKETS, seconds)] += 1
        self.seconds_sum += seconds


class _Collector(Collector):
    """Exports every :class:`TypeMetrics` ever created in this process."""

    def __init__(self) -> None:
        self.all: list[TypeMetrics] = []

    def collect(self) -> Iterator[Metric]:
        names = ("stream", "group", "type")
        counters = {
            "handled": CounterMetricFamily(
                "cofounder_events_handled",
                "Events whose handler succeeded and were acked.",
                labels=names,
            ),
            "failed": CounterMetricFamily(
                "cofounder_events_failed", "Handler attempts that raised.", labels=names
            ),
            "retried": CounterMetricFamily(
                "cofounder_events_retried",
                "Failed events scheduled for another attempt.",
                labels=names,
            ),
            "dead_lettered": CounterMetricFamily(
                "cofounder_events_dead_lettered",
                "Events moved to the dead-letter stream (failing, undecodable or over-delivered).",
                labels=names,
            ),
            "ignored": CounterMetricFamily(
                "cofounder_events_ignored",
                "Entries of a type this group has no handler for; acked without effect.",
                labels=names,
            ),
        }
        latency = HistogramMetricFamily(
            "cofounder_handler_seconds", "Handler latency of successful attempts.", labels=names
        )
        for tm in list(self.all):
            labels = list(tm.labels)
            for attr, family in counters.items():
                family.add_metric(labels, getattr(tm, attr))
            latency.add_metric(
                labels, cumulative_buckets(HANDLER_BUCKETS, tm.buckets), tm.seconds_sum
            )
        yield from counters.values()
        yield latency


def cumulative_buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    """A histogram's buckets as Prometheus exports them: ``(le, count at most le)`` per bound,
    then ``+Inf``; ``counts`` holds the count per bucket, the last one past every bound."""
    cumulative = 0
    buckets = []
    for bound, count in zip((*map(repr, bounds), "+Inf"), counts, strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    return buckets


_COLLECTOR: Final = _Collector()
REGISTRY.register(_COLLECTOR)


class StreamMetrics:
    """The metrics of one (stream, group), bound per event type on first use."""

    __slots__ = ("_by_type", "group", "lost", "stream")

    def __init__(self, *, stream: str, group: str) -> None:
        self.stream = stream
        self.group = group
        self.lost = OWNERSHIP_LOST.labels(stream, group)
        self._by_type: dict[bytes, TypeMetrics] = {}

    def for_type(self, type_: bytes) -> TypeMetrics:
        """The metrics of ``type_`` (the raw ``type`` field)."""
        found = self._by_type.get(type_)
        if found is None:
            found = TypeMetrics((self.stream, self.group, type_.decode(errors="replace")))
            self._by_type[type_] = found
            _COLLECTOR.all.append(found)
        return found

    def set_group_state(self, *, pending: int, lag: int | None) -> None:
        """Record the group's pending count and lag as read from ``XINFO GROUPS``."""
        GROUP_PENDING.labels(self.stream, self.group).set(pending)
        if lag is not None:
            GROUP_LAG.labels(self.stream, self.group).set(lag)
