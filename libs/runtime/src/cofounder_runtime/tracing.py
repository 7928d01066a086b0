"""OpenTelemetry tracing: off by default, switched on by the standard ``OTEL_*`` variables.

On when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``) or, with it unset,
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; off when
neither is, when ``OTEL_TRACES_EXPORTER=none`` or when ``OTEL_SDK_DISABLED=true``. (The
specification's default exporter is ``otlp``; ours is none, so that a process with no collector
configured sends nothing anywhere.) Everything else is the SDK's own reading of the environment:
``OTEL_SERVICE_NAME`` (default: the service's name), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_BSP_*`` (the batch processor), and the exporter's
``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, timeout, compression, certificates). The exporter
is OTLP over HTTP/protobuf (port 4318); a ``grpc`` protocol is refused with a warning.

Off means no SDK at all: no tracer provider is installed (the API's no-op stays), the SDK is not
even imported, and the hot paths test one module-level bool (:data:`ENABLED`) and do nothing
else: :func:`cofounder_contracts.envelope` leaves ``trace`` as it was (None, or the cause's), the
consumer calls its handler directly, and log lines get no ids.

On, the context crosses the bus in each event's ``trace`` (a W3C ``traceparent``):
:func:`~cofounder_contracts.envelope` fills it from the current span when the caller gave none,
and :func:`~cofounder_contracts.follow_up` prefers the current span to the cause's own ``trace``
(inside a handler that is the handler's CONSUMER span, itself a child of the cause's producer
span, so the chain stays exact; with no span current, the cause's context is passed on as it
came, so a process with tracing off keeps the trace whole). The consumer
(:mod:`cofounder_runtime.consumer`) runs each handler call in a CONSUMER span (:func:`consuming`)
whose parent is the event's ``trace``. ``tracestate`` is not carried across the bus: the
envelope holds a ``traceparent`` only (the gateway accepts both headers on a request).

Spans carry ids, names, counts and outcomes; never inputs, outputs, file contents or exception
messages (an exception becomes its type in ``error.type``), since spans bypass the logs' secret
scrubber.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cofounder_contracts.envelope import set_trace_source

if TYPE_CHECKING:
    from cofounder_contracts.envelope import Event

__all__ = [
    "ENABLED",
    "INVALID_SPAN",
    "Span",
    "SpanKind",
    "consuming",
    "context_of",
    "current_ids",
    "current_traceparent",
    "failed",
    "install",
    "setup_tracing",
    "shutdown",
    "span",
    "tracer_provider",
    "tracing_wanted",
    "uninstall",
]

#: Whether tracing is on in this process: the one thing hot paths read.
ENABLED: bool = False

_INSTRUMENTATION: Final = "cofounder"
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_log = structlog.get_logger("cofounder.tracing")

_tracer: Tracer = trace.NoOpTracer()
_provider: trace.TracerProvider | None = None


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters asked for, in order (``none`` dropped); see the module docstring."""
    if _true(environ.get("OTEL_SDK_DISABLED")):
        return []
    named = environ.get("OTEL_TRACES_EXPORTER")
    if named is not None and named.strip():
        names = [n.strip().lower() for n in named.split(",") if n.strip()]
        return [n for n in dict.fromkeys(names) if n != "none"]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return ["otlp"]
    return []


def tracing_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment switches tracing on (see the module docstring)."""
    return bool(_exporter_names(os.environ if environ is None else environ))


def setup_tracing(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Switch tracing on for this process when the environment says so; whether it is on.

    Installs an SDK tracer provider (the global one too, for libraries) with a batch processor
    per exporter, and the envelope's trace source. Idempotent; the provider flushes at exit
    (``atexit``), or at :func:`shutdown`.
    """
    if ENABLED:
        return True
    env = os.environ if environ is None else environ
    names = _exporter_names(env)
    if not names:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            protocol = (
                env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            ).strip()
            if protocol != "http/protobuf":
                _log.warning(
                    "tracing exporter protocol not supported; using http/protobuf",
                    protocol=protocol,
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter(out=sys.stderr))
        else:
            _log.warning("unknown tracing exporter; ignored", exporter=name)
    if not exporters:
        return False
    resource = Resource.create(
        {
            "service.name": env.get("OTEL_SERVICE_NAME") or service,
            "service.namespace": "cofounder",
        }
    )
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install(provider)
    _log.info("tracing on", service=resource.attributes.get("service.name"), exporters=names)
    return True


def install(provider: trace.TracerProvider) -> None:
    """Trace through ``provider`` from now on (:func:`setup_tracing` does it; tests use it with
    an in-memory exporter, without touching the global provider)."""
    global ENABLED, _tracer, _provider  # noqa: PLW0603 - the process's switch, read on hot paths
    _tracer = provider.get_tracer(_INSTRUMENTATION)
    _provider = provider
    set_trace_source(current_traceparent)
    ENABLED = True


def uninstall() -> None:
    """Tracing off again (for tests): the no-op tracer, no trace source for envelopes."""
    global ENABLED, _tracer, _provider  # noqa: PLW0603 - the process's switch, read on hot paths
    ENABLED = False
    set_trace_source(None)
    _tracer = trace.NoOpTracer()
    _provider = None


def tracer_provider() -> trace.TracerProvider | None:
    """The provider installed here, None when tracing is off."""
    return _provider


def shutdown() -> None:
    """Flush and stop the exporters (also done at exit)."""
    provider = _provider
    uninstall()
    stop = getattr(provider, "shutdown", None)
    if stop is not None:
        stop()


# -- propagation ---------------------------------------------------------------------------


def current_traceparent() -> str | None:
    """The current span's context as a W3C ``traceparent``; None when no span is current."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def context_of(traceparent: str | None) -> Context | None:
    """The context a ``traceparent`` names (a remote parent), None for a missing or malformed
    one (the span then starts a trace of its own)."""
    if not traceparent:
        return None
    context = _PROPAGATOR.extract({"traceparent": traceparent})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def current_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current span in hex, None when tracing is off or no span
    is current (for log lines)."""
    if not ENABLED:
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


# -- spans ---------------------------------------------------------------------------------


def failed(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: its type only, never its message (which may quote what
    a span must not hold)."""
    name = type(exc).__qualname__
    span.set_attribute("error.type", name)
    span.set_status(StatusCode.ERROR, name)


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    context: Context | None = None,
) -> Iterator[Span]:
    """A span around the block, current inside it; with tracing off, a no-op span (its
    setters do nothing) and no other work. An exception leaving the block marks it failed
    (:func:`failed`); ``asyncio.CancelledError`` too."""
    if not ENABLED:
        yield INVALID_SPAN
        return
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            failed(current, exc)
            raise


def consuming(
    event: Event, *, stream: str, group: str, entry_id: bytes, deliveries: int
) -> contextlib.AbstractContextManager[Span]:
    """The CONSUMER span of one handler call for ``event``: a child of the span that made it
    (its ``trace``), else the root of a trace of its own. Only called with tracing on."""
    return span(
        f"process {event.type}",
        kind=SpanKind.CONSUMER,
        context=context_of(event.trace) or Context(),  # no trace: a root, whatever is current
        attributes={
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": stream,
            "messaging.consumer.group.name": group,
            "messaging.message.id": event.event_id,
            "messaging.redis.entry_id": entry_id.decode(),
            "messaging.message.delivery_count": deliveries,
            "cofounder.event.type": event.type,
            "cofounder.event.producer": event.producer,
            "cofounder.build_id": event.build_id,
        },
    )
