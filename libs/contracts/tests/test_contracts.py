"""Contracts: stored payloads of every schema version decode; the codec and catalog hold."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from cofounder_contracts import (
    ALL_EVENTS,
    ALL_STREAMS,
    BudgetUsage,
    BuildRequested,
    Codec,
    ContextReady,
    DecodeError,
    Event,
    QnA,
    UnknownEventType,
    derived_event_id,
    encode_fields,
    new_event_id,
    schema,
    stream_for,
)
from cofounder_contracts.units import NO_NUL

PAYLOADS = Path(__file__).parent / "payloads"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "events"
CODEC = Codec(ALL_EVENTS)
ENVELOPE = {
    "build_id": "0195a0e2-6c1e-7c4a-9a51-3f1d2b7e8a10",
    "project_id": "0195a0e2-0000-7000-8000-00000000a001",
    "user_id": "0195a0e2-0000-7000-8000-0000000000b1",
    "producer": "test",
}


def _entry(data: bytes) -> dict[bytes, bytes]:
    decoded = json.loads(data)
    return {
        b"type": decoded["type"].encode(),
        b"event_id": decoded["event_id"].encode(),
        b"data": data,
    }


def _stored() -> list[Path]:
    return sorted(PAYLOADS.glob("v*/*.json"))


@pytest.mark.parametrize("path", _stored(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_stored_payload_still_decodes(path: Path) -> None:
    raw = path.read_bytes()
    event = CODEC.decode(_entry(raw))
    stored = json.loads(raw)
    assert event.type == path.stem == stored["type"]
    assert event.event_id == stored["event_id"]
    assert event.build_id == stored["build_id"]
    assert event.occurred_at == datetime.fromisoformat(stored["occurred_at"])
    # Every field the old producer wrote (and this version still knows) kept its value.
    ours = msgspec.to_builtins(event)
    for key, value in stored.items():
        if key in ours:
            assert ours[key] == value, key


def test_every_event_has_a_stored_v1_payload() -> None:
    stored = {p.stem for p in (PAYLOADS / "v1").glob("*.json")}
    assert stored == {e.event_type() for e in ALL_EVENTS}


def test_unknown_fields_are_ignored_and_missing_defaults_filled() -> None:
    usage = CODEC.decode(_entry((PAYLOADS / "v1" / "budget.usage.json").read_bytes()))
    assert isinstance(usage, BudgetUsage)
    assert usage.cache_read_input_tokens == 20480
    old = CODEC.decode(_entry((PAYLOADS / "v1" / "build.requested.json").read_bytes()))
    assert isinstance(old, BuildRequested)
    assert (old.build_version, old.schema_version, old.causation_id) == (1, 1, None)


def _sample(event_type: type[Event]) -> Event:
    stored = (PAYLOADS / "v1" / f"{event_type.event_type()}.json").read_bytes()
    return CODEC.decode(_entry(stored))


@pytest.mark.parametrize("event_type", ALL_EVENTS, ids=lambda e: e.event_type())
def test_round_trip(event_type: type[Event]) -> None:
    event = _sample(event_type)
    fields = encode_fields(event)
    assert fields[b"type"] == event_type.event_type().encode()
    assert fields[b"event_id"] == event.event_id.encode()
    assert CODEC.decode(fields) == event


def test_type_field_and_payload_tag_must_agree() -> None:
    fields = encode_fields(BuildRequested(**ENVELOPE, goal="g"))
    fields[b"type"] = b"context.ready"
    with pytest.raises(DecodeError, match=r"context\.ready"):
        CODEC.decode(fields)


def test_missing_fields_are_named() -> None:
    data = json.dumps({"type": "build.requested", **ENVELOPE, "event_id": new_event_id()})
    with pytest.raises(DecodeError, match="goal"):
        CODEC.decode({b"type": b"build.requested", b"event_id": b"e", b"data": data.encode()})
    with pytest.raises(DecodeError, match="'data'"):
        CODEC.decode({b"type": b"build.requested"})


def test_constraints_are_enforced_on_decode() -> None:
    usage = msgspec.json.decode((PAYLOADS / "v1" / "budget.usage.json").read_bytes())
    usage["input_tokens"] = -5
    with pytest.raises(DecodeError, match="input_tokens"):
        CODEC.decode(_entry(json.dumps(usage).encode()))


def _stored_fields(event_type: str) -> dict[str, object]:
    decoded: dict[str, object] = json.loads((PAYLOADS / "v1" / f"{event_type}.json").read_bytes())
    return decoded


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("snapshot.requested", "project_id", "../../escape"),
        ("snapshot.requested", "build_id", "b1"),
        ("build.requested", "user_id", "0195A0E2-0000-7000-8000-0000000000B1"),  # not canonical
        ("build.requested", "project_id", ""),  # empty only on user-level events
        ("build.requested", "event_id", "e"),
        ("build.status_changed", "causation_id", "../x"),
        ("budget.topped_up", "user_id", ""),
        ("budget.topped_up", "build_id", "not-a-build"),
        ("snapshot.requested", "sandbox_id", "../../sandboxes/other"),
        ("snapshot.requested", "sandbox_id", "x" * 101),
        ("tool.called", "tool_use_id", "toolu 01"),
        ("tool.called", "tool_use_id", "t" * 201),
    ],
)
def test_ids_are_held_to_their_form_on_decode(event_type: str, field: str, value: str) -> None:
    """Ids end up in keys and paths: one that is not of its form never reaches a handler."""
    stored = _stored_fields(event_type)
    assert stored[field] != value
    with pytest.raises(DecodeError, match=rf"\$\.{field}"):
        CODEC.decode(_entry(json.dumps(stored | {field: value}).encode()))


def test_user_level_events_carry_no_build_and_every_uuid_form_is_accepted() -> None:
    topped_up = CODEC.decode(_entry(json.dumps(_stored_fields("budget.topped_up")).encode()))
    assert (topped_up.build_id, topped_up.project_id) == ("", "")
    for made in (str(uuid.uuid4()), new_event_id(), derived_event_id(new_event_id(), "k")):
        stored = _stored_fields("build.requested") | {"build_id": made, "causation_id": made}
        assert CODEC.decode(_entry(json.dumps(stored).encode())).build_id == made


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("budget.usage", "input_tokens", 10**12),
        ("budget.usage", "cache_read_input_tokens", 5_000_001),
        ("agent.iteration_completed", "output_tokens", 10**12),
        ("agent.iteration_completed", "tool_calls", 2**31),
        ("build.completed", "iterations", 10**9),
        ("tool.completed", "duration_ms", 10**13),
        ("snapshot.completed", "bytes_uploaded", 2**53),
        ("budget.warning", "spent_micros", 2**63),
        ("budget.topped_up", "amount_micros", 2**53),
    ],
)
def test_every_count_has_an_upper_bound(event_type: str, field: str, value: int) -> None:
    """The bound is the contract's, so every consumer refuses the same entry at decode."""
    stored = _stored_fields(event_type)
    with pytest.raises(DecodeError, match=rf"\$\.{field}"):
        CODEC.decode(_entry(json.dumps(stored | {field: value}).encode()))


#: Every event text field a consumer writes to a PostgreSQL column: the event, the field, the
#: table and column it lands in, and the column's length (None: ``text``, unbounded).
STORED_TEXT = [
    ("budget.usage", "model", "budget_ledger", "model", 100),  # the budget service's ledger
    ("budget.topped_up", "note", "budget_topups", "note", None),  # the budget service
    ("build.failed", "reason", "builds", "error", None),  # the gateway's projection
    ("build.status_changed", "reason", "builds", "error", None),  # the projection, on an end
    ("build.completed", "preview_url", "builds", "preview_url", None),  # the projection
    ("artifact_generated", "artifact_type", "artifacts", "artifact_type", 60),  # the product's
]


@pytest.mark.parametrize(
    ("event_type", "field", "max_length"),
    [(e, f, n) for e, f, _, _, n in STORED_TEXT],
    ids=[f"{e}.{f}" for e, f, *_ in STORED_TEXT],
)
def test_text_a_column_cannot_hold_is_refused_at_decode(
    event_type: str, field: str, max_length: int | None
) -> None:
    """A NUL (no PostgreSQL text holds one) or a value longer than its column is a decode error,
    dead-lettered at once, not a database error the consumer retries; a normal value passes."""
    stored = _stored_fields(event_type)
    for hostile in ("a\x00b", "\x00", "claude\x00; DROP TABLE builds"):
        with pytest.raises(DecodeError, match=rf"\$\.{field}"):
            CODEC.decode(_entry(json.dumps(stored | {field: hostile}).encode()))
    fits = ["Café ✓ — ok", "x" * (max_length or 100_000)]
    if max_length is not None:
        fits.append("é" * max_length)  # the column counts characters, as the contract does
        with pytest.raises(DecodeError, match=rf"\$\.{field}"):
            CODEC.decode(_entry(json.dumps(stored | {field: "x" * (max_length + 1)}).encode()))
    for value in fits:
        event = CODEC.decode(_entry(json.dumps(stored | {field: value}).encode()))
        assert getattr(event, field) == value


def _string_type(event_type: str, field: str) -> msgspec.inspect.StrType:
    [event] = [e for e in ALL_EVENTS if e.event_type() == event_type]
    info = msgspec.inspect.type_info(event)
    assert isinstance(info, msgspec.inspect.StructType)
    [found] = [f.type for f in info.fields if f.name == field]
    if isinstance(found, msgspec.inspect.UnionType):  # optional: str | None
        [found] = [t for t in found.types if not isinstance(t, msgspec.inspect.NoneType)]
    if isinstance(found, msgspec.inspect.Metadata):  # a description beside the constraints
        found = found.type
    assert isinstance(found, msgspec.inspect.StrType), (event_type, field, found)
    return found


@pytest.mark.parametrize(
    ("event_type", "field", "table", "column"),
    [(e, f, t, c) for e, f, t, c, _ in STORED_TEXT],
    ids=[f"{e}.{f}" for e, f, *_ in STORED_TEXT],
)
def test_stored_text_is_bounded_as_its_column_is(
    event_type: str, field: str, table: str, column: str
) -> None:
    """The contract's bound is the column's (``cofounder_db``), and no NUL."""
    models = pytest.importorskip("cofounder_db.models")
    tables = {t.name: t for m in models.all_metadata() for t in m.tables.values()}
    length = getattr(tables[table].c[column].type, "length", None)
    declared = _string_type(event_type, field)
    assert declared.max_length == length
    assert declared.pattern == NO_NUL
    assert [n for e, f, _, _, n in STORED_TEXT if (e, f) == (event_type, field)] == [length]


def test_unknown_type() -> None:
    with pytest.raises(UnknownEventType):
        CODEC.decode({b"type": b"nope.nothing", b"event_id": b"e", b"data": b"{}"})
    assert not CODEC.knows(b"nope.nothing")
    assert CODEC.knows(b"build.requested")


def test_events_are_frozen_and_keyword_only() -> None:
    event = ContextReady(
        **ENVELOPE,
        goal="g",
        idea_brief={},
        qna=[QnA(question="q", answer="a")],
        tier="bootstrapper",
    )
    with pytest.raises(AttributeError):
        event.goal = "other"  # type: ignore[misc, unused-ignore]
    with pytest.raises(TypeError):
        BuildRequested("b1", "p1", "u1", "test", "g")  # type: ignore[call-arg]
    assert event.type == "context.ready"
    assert event.occurred_at.tzinfo is UTC


def test_event_ids_are_uuid7_and_sort_by_time() -> None:
    ids = [new_event_id() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)  # canonical form, lower case
    assert len(set(ids)) == 50
    # Milliseconds lead the id, so ids from different milliseconds sort in creation order.
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_every_event_is_carried_by_exactly_one_stream() -> None:
    carried = [e for s in ALL_STREAMS for e in s.events]
    assert sorted(carried, key=lambda e: e.event_type()) == sorted(
        ALL_EVENTS, key=lambda e: e.event_type()
    )
    assert len(carried) == len(set(carried))
    for event_type in ALL_EVENTS:
        assert event_type in stream_for(event_type).events
    names = [s.name for s in ALL_STREAMS]
    assert len(names) == len(set(names))
    assert all(s.dlq == s.name + ".dlq" for s in ALL_STREAMS)
    # Every stream but the business events (read by subscribers outside) has a group here.
    assert [s.name for s in ALL_STREAMS if not s.groups] == ["cofounder.business.events"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ALL_STREAMS[0].name = "x"  # type: ignore[misc, unused-ignore]


def test_committed_catalog_equals_a_fresh_export(tmp_path: Path) -> None:
    written = schema.export(tmp_path)
    on_disk = [*DOCS.glob("schemas/*.json"), DOCS / "asyncapi.json", DOCS / "README.md"]
    assert {p.relative_to(tmp_path) for p in written} == {p.relative_to(DOCS) for p in on_disk}
    for path in written:
        committed = DOCS / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `cofounder events export`"
        )


def test_catalog_page_lists_every_stream_its_events_groups_and_dead_letters() -> None:
    page = schema.readme()
    for stream in ALL_STREAMS:
        section = page.split(f"### `{stream.name}`\n", 1)[1].split("\n### ", 1)[0]
        assert stream.description in section
        assert f"`{stream.dlq}`" in section
        for event in stream.events:
            assert f"[`{event.event_type()}`](schemas/{event.event_type()}.json)" in section
            assert schema.summary(event) in section
        for group in stream.groups:
            assert f"`{group}`" in section
    for field in schema.ENVELOPE_FIELDS:
        assert f"| `{field}` |" in page
    assert "``" not in page  # docstrings' reST literals are Markdown here


def test_asyncapi_document_describes_streams_and_groups() -> None:
    doc = schema.asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) == {s.name for s in ALL_STREAMS}
    assert "context-assembler.cofounder.builds.requested" in doc["operations"]
    for message in doc["components"]["messages"].values():
        ref = message["payload"]["$ref"].rsplit("/", 1)[-1]
        assert ref in doc["components"]["schemas"]


def test_derived_event_ids_are_deterministic_uuid7_with_the_cause_time() -> None:
    cause = new_event_id()
    first = derived_event_id(cause, "context.ready")
    assert first == derived_event_id(cause, "context.ready")
    assert first != derived_event_id(cause, "build.failed")
    assert first != derived_event_id(new_event_id(), "context.ready")
    assert uuid.UUID(first).version == 7
    assert first[:13] == cause[:13]  # the same millisecond timestamp


def test_payload_digest_tells_another_payload_from_the_same_event_made_again() -> None:
    from datetime import timedelta

    import msgspec

    from cofounder_contracts import SnapshotCompleted
    from cofounder_contracts.codec import payload_digest

    first = SnapshotCompleted(
        **ENVELOPE | {"producer": "snapshot"},
        version=3, files=10, bytes_uploaded=500, blobs_uploaded=2, duration_ms=40,
    )  # fmt: skip
    # Made again for a redelivered request: another time, nothing uploaded, another duration.
    again = msgspec.structs.replace(
        first,
        occurred_at=first.occurred_at + timedelta(seconds=5),
        bytes_uploaded=0,
        blobs_uploaded=0,
        duration_ms=3,
    )
    assert payload_digest(again) == payload_digest(first)
    assert payload_digest(msgspec.structs.replace(first, version=4)) != payload_digest(first)
    assert payload_digest(msgspec.structs.replace(first, files=11)) != payload_digest(first)
