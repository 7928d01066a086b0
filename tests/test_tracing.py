"""One build through the five services as processes, with tracing on and an OTLP receiver of the
test's own: one trace holds the gateway request, the assembler, every model call and tool call,
the budget's metering and the snapshots, each span a child of the one that made its event.

The receiver is a small HTTP server speaking OTLP/HTTP (protobuf ``ExportTraceServiceRequest``
on ``/v1/traces``); the services find it through ``OTEL_EXPORTER_OTLP_ENDPOINT``. The request
comes with a ``traceparent`` (and a ``tracestate``) of a caller's span that the test made up:
everything must hang under it.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from cofounder_contracts import (
    ALL_EVENTS,
    ALL_STREAMS,
    BudgetUsage,
    Codec,
    Event,
    SnapshotRequested,
    ToolCalled,
)
from cofounder_testing.pipeline import Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": "Bearer dev-admin-token"}
CODEC = Codec(ALL_EVENTS)


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str  # SERVER, CONSUMER, CLIENT, INTERNAL
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    trace_state: str
    attributes: dict[str, Any]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def _spans(request: ExportTraceServiceRequest) -> list[Span]:
    out = []
    for resource in request.resource_spans:
        service = next(
            (_value(a.value) for a in resource.resource.attributes if a.key == "service.name"), ""
        )
        for scope in resource.scope_spans:
            for span in scope.spans:
                out.append(
                    Span(
                        service=service,
                        name=span.name,
                        kind=SpanProto.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        trace_state=span.trace_state,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                )
    return out


class Receiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1, keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.spans.extend(_spans(request))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def of_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def stack(own_database_url: str, tmp_path: Path, receiver: Receiver) -> Iterator[Stack]:
    with running_stack(
        tmp_path,
        database_url=own_database_url,
        builds=1,
        latency_ms=20,
        LOG_JSON="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: spans reach the receiver soon after they end
        SNAPSHOT_EVERY="4",  # periodic snapshots as well as the final one
    ) as stack:
        yield stack


def _events(client: sync_redis.Redis, build_id: str) -> dict[str, Event]:
    """Every event of the build on the contract streams, by id."""
    found: dict[str, Event] = {}
    for stream in ALL_STREAMS:
        for _, fields in client.xrange(stream.name):
            event = CODEC.decode(fields)
            if event.build_id == build_id:
                found[event.event_id] = event
    return found


def _span_of(traceparent: str | None) -> tuple[str, str]:
    assert traceparent is not None
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


def test_one_build_is_one_trace_correctly_parented(stack: Stack, receiver: Receiver) -> None:
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    with (
        httpx.Client(base_url=stack.gateway_url, timeout=30) as http,
        contextlib.closing(sync_redis.Redis(port=stack.redis_port)) as client,
    ):
        founder = http.post("/v1/admin/demo", headers=ADMIN).json()
        created = http.post(
            f"/v1/projects/{founder['project_id']}/builds",
            json={},
            headers={
                "Authorization": f"Bearer {founder['token']}",
                "traceparent": f"00-{trace_id}-{caller}-01",
                "tracestate": "caller=t61rcWkgMzE",
            },
        )
        assert created.status_code == 202, created.text
        build_id = created.json()["id"]
        auth = {"Authorization": f"Bearer {founder['token']}"}

        def ready() -> bool:
            status = http.get(f"/v1/builds/{build_id}", headers=auth).json()["status"]
            assert status not in ("failed", "cancelled"), status
            return bool(status == "ready")

        wait_for("the build to be ready", ready, stack, 240)
        events = _events(client, build_id)

        usage = [e for e in events.values() if isinstance(e, BudgetUsage)]
        tools = [e for e in events.values() if isinstance(e, ToolCalled)]
        snapshots = [e for e in events.values() if isinstance(e, SnapshotRequested)]
        assert usage
        assert tools
        assert len(snapshots) >= 2  # periodic and final

        def named(prefix: str) -> list[Span]:
            return [s for s in receiver.of_trace(trace_id) if s.name.startswith(prefix)]

        def all_exported() -> bool:
            return (
                len(named("process context.ready")) == 1  # ends when the build's drive does
                and len(named("budget.meter")) >= len(usage)
                and len(named("snapshot.take")) >= len(snapshots)
            )

        wait_for("every span exported", all_exported, stack, 60)

    spans = receiver.of_trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans), "a span was exported twice"

    def one(service: str, name: str) -> Span:
        [found] = [s for s in spans if s.service == service and s.name == name]
        return found

    def parent(span: Span) -> Span:
        assert span.parent_id in by_id, f"{span.name} ({span.service}): parent not in the trace"
        return by_id[span.parent_id]

    # The gateway's request: a child of the caller's span, its tracestate kept.
    request = one("gateway", "POST /v1/projects/{project_id}/builds")
    assert request.kind == "SERVER"
    assert request.parent_id == caller
    assert request.trace_state == "caller=t61rcWkgMzE"
    assert request.attributes["http.response.status_code"] == 202
    assert request.attributes["http.route"] == "/v1/projects/{project_id}/builds"
    # Its access-log line carries the build's trace and the request's own span: a log search by
    # the trace id finds the request that started the build.
    build_traces = {_span_of(e.trace)[0] for e in events.values()}
    assert build_traces == {trace_id}
    [access] = [
        line
        for line in (
            json.loads(text) for text in stack.log("gateway").splitlines() if text.startswith("{")
        )
        if line.get("event") == "request"
        and line.get("method") == "POST"
        and line.get("route") == "/v1/projects/{project_id}/builds"
    ]
    assert access["status"] == 202
    assert access["user_id"] == founder["user_id"]
    assert (access["trace_id"], access["span_id"]) == (trace_id, request.span_id)

    # The chain of work: request -> assembler -> runner.
    assembler = one("context-assembler", "process build.requested")
    assert assembler.kind == "CONSUMER"
    assert parent(assembler) is request
    runner = one("agent-runner", "process context.ready")
    assert parent(runner) is assembler

    # Every model call and every tool call, children of the runner's span, with their
    # attributes and none of the conversation.
    calls = [s for s in spans if s.name.startswith("chat ")]
    assert len(calls) == len(usage)
    for call in calls:
        assert call.service == "agent-runner"
        assert call.kind == "CLIENT"
        assert parent(call) is runner
        assert call.attributes["gen_ai.operation.name"] == "chat"
        assert call.attributes["gen_ai.provider.name"] == "anthropic"
        assert call.attributes["gen_ai.usage.input_tokens"] > 0
        assert call.attributes["gen_ai.usage.output_tokens"] > 0
    assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in calls) == sum(
        u.output_tokens for u in usage
    )
    executed = [s for s in spans if s.name.startswith("execute_tool ")]
    assert sorted(s.attributes["gen_ai.tool.call.id"] for s in executed) == sorted(
        t.tool_use_id for t in tools
    )
    for tool in executed:
        assert parent(tool) is runner
        assert tool.name == f"execute_tool {tool.attributes['gen_ai.tool.name']}"
        assert isinstance(tool.attributes["cofounder.tool.is_error"], bool)
    # Ids, names, counts and outcomes only: no tool input (a command) anywhere in a span.
    commands = [str(t.input_preview) for t in tools if t.name == "bash"]
    rendered = json.dumps([s.attributes for s in spans], default=str)
    for command in commands:
        assert command[:40] not in rendered

    # The budget meters each model call under the call that made it.
    for meter in named("budget.meter"):
        assert meter.service == "budget"
        assert meter.attributes["cofounder.metering.counted"] is True
        assert meter.attributes["cofounder.metering.cost_micros"] > 0
        consumer = parent(meter)
        assert consumer.name == "process budget.usage"
        assert parent(consumer) in calls
    assert {parent(parent(m)).span_id for m in named("budget.meter")} == {s.span_id for s in calls}

    # Every snapshot is taken under the runner's span that asked for it.
    for take in named("snapshot.take"):
        assert take.service == "snapshot"
        consumer = parent(take)
        assert consumer.name == "process snapshot.requested"
        assert parent(consumer) is runner
        assert take.attributes["cofounder.snapshot.outcome"] in ("completed", "reused")

    # In general: each consumer span's parent is the span that made its event (the event's
    # trace), in every service (the gateway's projection of the build's events included).
    consumers = [s for s in spans if s.kind == "CONSUMER"]
    assert {s.service for s in consumers} >= {
        "gateway",
        "context-assembler",
        "agent-runner",
        "budget",
        "snapshot",
    }
    for consumer in consumers:
        event = events[consumer.attributes["messaging.message.id"]]
        assert _span_of(event.trace) == (trace_id, consumer.parent_id), consumer
        assert consumer.attributes["messaging.system"] == "redis"
        assert consumer.attributes["cofounder.event.type"] == event.type

    # The runner's log lines about the build carry the trace and the span they were written in.
    lines = [
        json.loads(line)
        for slot in ("agent-runner1", "agent-runner2")
        for line in stack.log(slot).splitlines()
        if line.startswith("{") and build_id in line
    ]
    completed = [line for line in lines if line.get("event") == "build completed"]
    assert completed
    assert {(line["trace_id"], line["span_id"]) for line in completed} == {
        (trace_id, runner.span_id)
    }
