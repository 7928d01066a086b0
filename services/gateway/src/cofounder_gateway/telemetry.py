"""The API's request spans: FastAPI's own OpenTelemetry instrumentation, on our provider.

With tracing on (``cofounder_runtime.tracing``: the ``OTEL_*`` variables), every request but
the probes and the scrape gets a SERVER span, a child of the caller's ``traceparent`` (and
``tracestate``) when it sends one (the W3C Trace Context propagator), with the method, route,
status and ``error.type``. The events a request writes (a ``build.requested`` in the outbox,
its ``queued`` status) carry that span's context: the envelope reads the current span. FastAPI's
operation spans (dependencies, endpoint, serialisation), its metrics and its log records stay
off: the metrics are Prometheus's, the logs structlog's.

With tracing off, the instrumentation is off as well: not even a provider lookup per request.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final

from fastapi.telemetry import TelemetryConfig

from cofounder_runtime import tracing

__all__ = ["telemetry"]

#: Polled by orchestrators and scrapers: a span each would be noise.
_UNTRACED: Final = frozenset({"/v1/healthz", "/v1/readyz", "/metrics"})


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in _UNTRACED


def telemetry() -> TelemetryConfig:
    """FastAPI's ``telemetry=`` for this process (read when the app is made)."""
    provider = tracing.tracer_provider()
    if provider is None:
        return {"tracing": False, "metrics": False, "logs": False}
    return {
        "tracer_provider": provider,
        "tracing": True,
        "operation_spans": False,
        "metrics": False,
        "logs": False,
        "exclude": _untraced,
    }
