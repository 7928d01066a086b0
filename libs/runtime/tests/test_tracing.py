"""Tracing: off by default and then inert; on, the context crosses the bus in ``trace``, and a
handler runs in a CONSUMER span that is a child of the span that made its event."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis

from cofounder_contracts import BuildRequested, ContextReady, envelope, follow_up
from cofounder_contracts.codec import payload_digest
from cofounder_runtime import tracing
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.logs import add_trace_context
from cofounder_runtime.publisher import Publisher
from cofounder_testing.fixtures import Names
from cofounder_testing.inprocess import FAST, pending
from cofounder_testing.waiting import eventually

BUILD = "00000000-0000-0000-0000-000000000001"
PROJECT = "00000000-0000-0000-0000-000000000002"
USER = "00000000-0000-0000-0000-000000000003"
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _request(trace_: str | None = None) -> BuildRequested:
    return BuildRequested(
        **envelope(build_id=BUILD, project_id=PROJECT, user_id=USER, producer="t", trace=trace_),
        goal="a goal",
    )


def _ready(cause: BuildRequested) -> ContextReady:
    return ContextReady(
        **follow_up(cause, producer="t", kind="context.ready"),
        goal="a goal",
        idea_brief={},
        qna=[],
        tier="founder",
    )


def _traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, into memory (the global provider untouched)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()
        provider.shutdown()


# -- off -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ],
)
def test_the_standard_variables_switch_tracing_on(environ: dict[str, str], wanted: bool) -> None:
    assert tracing.tracing_wanted(environ) is wanted


def test_with_nothing_set_nothing_is_installed() -> None:
    assert tracing.setup_tracing("test", environ={}) is False
    assert tracing.ENABLED is False
    assert tracing.tracer_provider() is None
    # The API's proxy (no SDK provider) stays the global one.
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"


def test_off_an_envelope_has_no_trace_even_inside_a_span() -> None:
    """Off means not looking: a span some library started is not read either."""
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("elsewhere"):
        assert (
            envelope(build_id=BUILD, project_id=PROJECT, user_id=USER, producer="t")["trace"]
            is None
        )
        assert _ready(_request()).trace is None
        # follow_up passes the cause's context on untouched.
        assert _ready(_request(PARENT)).trace == PARENT
    assert tracing.current_ids() is None
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}
    with tracing.span("nothing") as span:
        assert span is tracing.INVALID_SPAN
        assert not span.is_recording()


def test_the_trace_is_not_part_of_what_an_event_says() -> None:
    """A redelivery makes the same event under another span: the same payload all the same."""
    event = _request(PARENT)
    again = _request("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01")
    again = BuildRequested(**{**_fields(again), "event_id": event.event_id})
    assert payload_digest(again) == payload_digest(event)


def _fields(event: BuildRequested) -> dict[str, object]:
    return {f: getattr(event, f) for f in event.__struct_fields__}


# -- propagation ---------------------------------------------------------------------------


def test_on_an_envelope_carries_the_current_span(spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("t", tracer_provider=tracing.tracer_provider())
    assert _request().trace is None  # no span current
    with tracer.start_as_current_span("request"):
        made = _request()
        explicit = _request(PARENT)
    [span] = spans.get_finished_spans()
    assert made.trace == _traceparent(span)
    assert explicit.trace == PARENT  # the caller's wins


def test_on_follow_up_prefers_the_current_span_to_the_cause(spans: InMemorySpanExporter) -> None:
    cause = _request(PARENT)
    assert _ready(cause).trace == PARENT  # no span current: passed on as it came
    tracer = trace.get_tracer("t", tracer_provider=tracing.tracer_provider())
    with tracer.start_as_current_span("handler"):
        derived = _ready(cause)
    [span] = spans.get_finished_spans()
    assert derived.trace == _traceparent(span)


def test_a_traceparent_round_trips_and_a_bad_one_is_ignored(spans: InMemorySpanExporter) -> None:
    context = tracing.context_of(PARENT)
    assert context is not None
    ctx = trace.get_current_span(context).get_span_context()
    assert (ctx.trace_id, ctx.span_id, ctx.is_remote) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        True,
    )
    for bad in (None, "", "nonsense", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        assert tracing.context_of(bad) is None
    with tracing.span("child", context=context):
        assert tracing.current_traceparent() is not None
    [child] = spans.get_finished_spans()
    assert child.parent is not None
    assert child.parent.span_id == 0xB7AD6B7169203331


def test_log_lines_carry_the_current_span(spans: InMemorySpanExporter) -> None:
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}
    with tracing.span("work") as span:
        line = add_trace_context(None, "info", {"event": "x"})
    ctx = span.get_span_context()
    assert line == {
        "event": "x",
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
    }


def test_a_failure_marks_the_span_with_its_type_only(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="secret"), tracing.span("work"):
        raise ValueError("the secret token is hunter2")
    [span] = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError"
    assert dict(span.attributes or {})["error.type"] == "ValueError"
    assert not span.events  # no exception event: its message could hold anything
    assert "hunter2" not in repr(span.to_json())


# -- the consumer --------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_handler_runs_in_a_consumer_span_child_of_the_producer(
    spans: InMemorySpanExporter, redis: Redis, names: Names
) -> None:
    derived: list[ContextReady] = []
    failures: list[str] = []

    async def handle(event: BuildRequested) -> None:
        if event.trace is None and not failures:
            failures.append(event.event_id)
            raise RuntimeError("once")  # the traceless event fails once: two spans
        derived.append(_ready(event))

    traced, traceless = _request(PARENT), _request()
    await Publisher(redis).publish_many([(names.stream, traced), (names.stream, traceless)])
    consumer = Consumer(
        redis,
        stream=names.stream,
        group=names.group,
        consumer="c",
        handlers={BuildRequested: handle},
        options=FAST,
    )
    task = asyncio.create_task(consumer.run())
    try:

        async def done() -> bool:
            return len(derived) == 2 and await pending(redis, names) == 0

        await eventually(done, what="both events handled")
    finally:
        consumer.stop()
        await task

    handled = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert len(handled) == 3
    by_id: dict[object, list[ReadableSpan]] = {}
    for span in handled:
        assert span.name == "process build.requested"
        attrs = dict(span.attributes or {})
        assert attrs["messaging.system"] == "redis"
        assert attrs["messaging.destination.name"] == names.stream
        assert attrs["messaging.consumer.group.name"] == names.group
        assert attrs["cofounder.event.type"] == "build.requested"
        assert attrs["cofounder.build_id"] == BUILD
        by_id.setdefault(attrs["messaging.message.id"], []).append(span)
    [child] = by_id[traced.event_id]
    assert child.parent is not None
    assert (child.parent.trace_id, child.parent.span_id) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )
    failed, succeeded = by_id[traceless.event_id]
    for root in (failed, succeeded):
        assert root.parent is None  # no trace: a trace of its own
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["messaging.message.delivery_count"] == 1
    assert dict(succeeded.attributes or {})["messaging.message.delivery_count"] == 2
    # What a handler makes is a child of its span.
    assert {e.trace for e in derived} == {_traceparent(child), _traceparent(succeeded)}
