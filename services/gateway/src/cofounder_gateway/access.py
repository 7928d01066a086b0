"""The access log and the RED metrics of the HTTP API: one pure-ASGI middleware.

Per request, when its response is done (an event stream: when it closes), one log line::

    {"event": "request", "method": "GET", "route": "/v1/builds/{build_id}", "status": 200,
     "duration_ms": 3.2, "user_id": "…", "path": "/v1/builds/…", "level": "info", …}

``route`` is the matched route's template (None when no route matched); ``user_id`` is the
authenticated founder's when authentication ran (``request.state.user_id``, set by the auth
dependency: :func:`remember_user`); ``query`` is the query string with the values of
credential-like parameters (``token``, ``access_token``, ``api_key``, …) replaced by
``[redacted]``. No header is logged, so never an ``Authorization``. With tracing on, the line
carries ``trace_id`` and ``span_id``: FastAPI's request span is current around every user
middleware, and the logging processor adds its ids.

The metrics (Prometheus; names are part of the operations contract: the dashboard and the alert
rules use them):

- ``cofounder_gateway_requests_total{method, route, status}``
- ``cofounder_gateway_request_seconds{method, route}``: a histogram of the time to the response's
  end; for an event stream, to its start (how long it lasts is the client's doing);
- ``cofounder_gateway_sse_streams_open``: event streams (``text/event-stream`` responses) this
  process is serving now.

Labels are route templates, never raw paths (a build id per series would have no bound); a
request no route matched counts under ``route="unmatched"``, and a method outside HTTP's usual
ones under ``method="other"``. As in the stream runtime's metrics (``cofounder_runtime.metrics``)
a request costs integer additions and one ``bisect``, no lock: the counts are plain ints exported
by a collector at scrape time (the event loop writes them, the exporter's thread reads them; a
scrape during an update may be one request behind in one series, which Prometheus tolerates).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import unquote_plus

import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cofounder_runtime.metrics import LATENCY_BUCKETS, cumulative_buckets

__all__ = [
    "HTTP_METRICS",
    "REDACTED",
    "AccessLog",
    "HttpMetrics",
    "redact_query",
    "remember_user",
    "route_template",
]

#: What a credential's value becomes in a logged query string.
REDACTED: Final = "[redacted]"
#: A query parameter whose (lower-cased) name holds one of these is a credential.
_CREDENTIAL_WORDS: Final = ("token", "secret", "password", "passwd", "key", "auth", "signature")
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED: Final = "unmatched"
_EVENT_STREAM: Final = b"text/event-stream"

_log = structlog.get_logger("cofounder.gateway.access")


def remember_user(connection: HTTPConnection, user_id: str) -> str:
    """Note ``user_id`` as the request's authenticated user (for its access-log line) and
    return it: ``return remember_user(request, user_from_header(...))``."""
    connection.state.user_id = user_id
    return user_id


def route_template(scope: Scope, root_path: str = "") -> str | None:
    """The template of the route that answered (``/v1/builds/{build_id}``), None when none
    matched. ``root_path``: the scope's before routing (a mount extends it: its template is
    ``<mount>/{path}``).

    A route of a router included with a prefix is, in ``scope["route"]``, the router's own
    (``/builds/{build_id}``): FastAPI keeps the full template in the scope's routing context
    (its telemetry reads it there too), which this prefers."""
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
        template = getattr(context, "path_format", None)
        if isinstance(template, str) and template:
            return template
    route = scope.get("route")
    if route is not None:
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        return template if isinstance(template, str) else None
    mounted = scope.get("root_path", "")
    if mounted != root_path and isinstance(mounted, str):
        return mounted + "/{path}"
    return None


def redact_query(query: str) -> str:
    """``query`` with each credential-like parameter's value replaced by :data:`REDACTED`
    (names and order kept, the rest as sent)."""
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, sep, _ = part.partition("=")
        lowered = unquote_plus(name).lower()
        if any(word in lowered for word in _CREDENTIAL_WORDS):
            parts[i] = f"{name}={REDACTED}" if sep else name
    return "&".join(parts)


class _Latency:
    """The histogram of one (method, route)."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0


class HttpMetrics(Collector):
    """The API's RED metrics as plain counts, exported at scrape time."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], _Latency] = {}
        self.open_streams = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """A request to ``route`` answered ``status`` in ``seconds``."""
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        series = self.latency.get((method, route))
        if series is None:
            series = self.latency[(method, route)] = _Latency()
        series.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series.count += 1
        series.total += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "cofounder_gateway_requests",
            "HTTP requests answered, by method, route template and status.",
            labels=("method", "route", "status"),
        )
        for key, count in list(self.requests.items()):
            requests.add_metric(key, count)
        yield requests
        latency = HistogramMetricFamily(
            "cofounder_gateway_request_seconds",
            "Time to the response's end (an event stream: to its start), by method and route.",
            labels=("method", "route"),
        )
        for route, series in list(self.latency.items()):
            buckets = cumulative_buckets(LATENCY_BUCKETS, series.buckets)
            latency.add_metric(route, buckets, series.total)
        yield latency
        yield GaugeMetricFamily(
            "cofounder_gateway_sse_streams_open",
            "Event streams (text/event-stream responses) being served now.",
            value=self.open_streams,
        )


#: The process's HTTP metrics (one collector, registered once).
HTTP_METRICS = HttpMetrics()
REGISTRY.register(HTTP_METRICS)


class AccessLog:
    """Pure-ASGI middleware: the access-log line and the metrics of every HTTP request.

    Add it outside ``CatchCrashes`` (so it sees the 500 that one answers for a crash); an
    exception that still comes through (a stream broken after its start) is counted and logged
    with the status sent, or 500 when nothing was, and raised on."""

    def __init__(
        self, app: ASGIApp, *, metrics: HttpMetrics = HTTP_METRICS, log: Any = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.log = _log if log is None else log  # where the lines go (a test's capture)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        # The auth dependency writes the user here (request.state is this dict).
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500
        headers_at: float | None = None
        metrics = self.metrics

        async def sending(message: Message) -> None:
            nonlocal status, headers_at
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"content-type" and value.startswith(_EVENT_STREAM):
                        headers_at = time.perf_counter()
                        metrics.open_streams += 1
                        break
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            ended = time.perf_counter()
            if headers_at is not None:
                metrics.open_streams -= 1
            template = route_template(scope, root_path)
            method = scope["method"]
            metrics.observe(
                method if method in _METHODS else "other",
                template or _UNMATCHED,
                status,
                (headers_at or ended) - started,
            )
            query = scope.get("query_string")
            self.log.info(
                "request",
                method=method,
                route=template,
                status=status,
                duration_ms=round((ended - started) * 1000, 3),
                user_id=state.get("user_id"),
                path=scope["path"],
                **({"query": redact_query(query.decode("latin-1"))} if query else {}),
            )
