"""The event catalog for other languages: JSON Schema per event, AsyncAPI 3 for the streams, and
the catalog's page (``README.md``: the wire format, the envelope, every stream and its events).

``python -m cofounder_contracts docs/events`` (or ``cofounder events export``) rewrites the files;
a test checks the committed ones equal a fresh export, so the catalog cannot go stale.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import msgspec

from cofounder_contracts.envelope import Event
from cofounder_contracts.events import ALL_EVENTS
from cofounder_contracts.ids import UuidOrEmpty
from cofounder_contracts.streams import ALL_STREAMS, Stream

__all__ = ["ENVELOPE_FIELDS", "asyncapi", "event_schema", "export", "readme", "summary"]

WIRE_FORMAT: Final = (
    "Each stream entry has three fields: `type` (the dotted event name, e.g. `build.requested`), "
    "`event_id` (a UUIDv7, the idempotency key) and `data` (the event as UTF-8 JSON, `type` "
    "included). Route on `type` and deduplicate on `event_id` without decoding `data`. "
    "Unknown fields in `data` must be ignored; new fields always have defaults. Entries that a "
    "consumer group cannot handle go to `<stream>.dlq` with `dlq.*` fields saying why."
)


#: What each envelope field holds, in the catalog's page. Every field of :class:`Event` (and
#: ``type``, its tag) needs a line here: :func:`readme` refuses to leave one out.
ENVELOPE_FIELDS: Final = {
    "event_id": "A UUIDv7 (time-ordered), unique per event: the idempotency key of every "
    "handler, and the same as the entry's `event_id` field. Always set it: a payload without "
    "one gets a new id each time it is decoded.",
    "type": "The dotted event name, e.g. `build.requested`. The same as the entry's `type` field.",
    "schema_version": "The version of the event's schema (1). Payloads of every version are kept "
    "in `libs/contracts/tests/payloads/v<N>/` and decoded by the compatibility tests.",
    "occurred_at": "When it happened: UTC, RFC 3339. Always set it: a payload without it gets "
    "the time it is decoded.",
    "build_id": "The build it is about (a UUID); empty on the user-level events ({user_level}).",
    "project_id": "The build's project (a UUID); empty on the user-level events.",
    "user_id": "The founder the build or the change belongs to (a UUID).",
    "causation_id": "The `event_id` of the event that caused this one; null on a first event "
    "(a request from a client).",
    "producer": "The service that emitted it (`gateway`, `agent-runner`, ...).",
    "trace": "A W3C `traceparent`, when tracing is on; else null.",
}

#: The hand-written part of the catalog's page; ``{...}`` fields are filled by :func:`readme`.
README_TEMPLATE: Final = """\
# Event catalog

<!-- Generated from libs/contracts by `bin/cofounder events export`: do not edit. The text is
in libs/contracts/src/cofounder_contracts/schema.py; the streams and events are the contracts. -->

Generated files (do not edit; regenerate with `bin/cofounder events export`, and a test fails when
they are stale):

- this page: the wire format, the envelope, every stream with its events and consumer groups;
- [`asyncapi.json`](asyncapi.json): an AsyncAPI 3.0 document of every stream, its messages, and the
  consumer groups that receive them;
- [`schemas/<type>.json`](schemas/): the JSON Schema (2020-12) of every event.

The source of truth is `libs/contracts` (msgspec structs); this folder is for other languages.
How entries are delivered (at least once, retries, dead letters, retention, ordering):
[the delivery contract](../architecture.md#delivery-contract).

## Wire format

Each Redis stream entry has three fields:

| field | content |
| --- | --- |
| `type` | the dotted event name, e.g. `build.requested` |
| `event_id` | a UUIDv7 (time-ordered), the idempotency key of every handler |
| `data` | the event as UTF-8 JSON, `type` included |

Route on `type` and deduplicate on `event_id` without decoding `data`. Money is in integer
micro-units; counts are non-negative integers (an entry that breaks a constraint is
dead-lettered with the reason).

## The envelope

Every event carries these fields; the rest of an event's fields are in its schema.

| field | required by the schema | what it holds |
| --- | --- | --- |
{envelope}

## Streams

One stream per flow between services; every event type is carried by exactly one stream, and
each service reads with its own consumer group.

| stream | events | consumer groups |
| --- | --- | --- |
{summary}

Retention: every publish caps a stream's length (`MAXLEN ~`); the consumers trim it by age
(`MINID ~`), never past an entry that one of its groups has pending or has not read yet. A
stream that no group here reads is bounded by its length cap only.

{streams}

## Dead letters

Dead letters of stream `s` are in `s.dlq`: the original three fields plus `dlq.stream`, `dlq.id`,
`dlq.group`, `dlq.consumer`, `dlq.deliveries`, `dlq.error` and `dlq.failed_at_ms`
(`bin/cofounder dlq --help`).

## Evolution rules

- A new field gets a default, so old payloads still decode.
- No field is renamed or retyped; a changed meaning is a new field (or a new event).
- Unknown fields are ignored on decode, so old consumers read new payloads.
- A new event type is acked and ignored by groups without a handler for it.
- Every schema version's payloads are stored in `libs/contracts/tests/payloads/v<N>/` and the
  compatibility tests decode all of them; add a folder when `schema_version` changes.
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def summary(event: type[Event]) -> str:
    """The first paragraph of ``event``'s docstring, on one line and in Markdown (reST's double
    backticks made single)."""
    first = (event.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(first.split()).replace("``", "`")


def event_schema(event: type[Event]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one event, its nested types in ``$defs``."""
    schema: dict[str, Any] = msgspec.json.schema(event)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = event.event_type()
    return schema


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of every stream, its messages and the groups that receive them."""
    (_, components) = msgspec.json.schema_components(
        ALL_EVENTS, ref_template="#/components/schemas/{name}"
    )
    messages = {
        e.__name__: {
            "name": e.event_type(),
            "title": e.event_type(),
            "summary": summary(e),
            "payload": {"$ref": f"#/components/schemas/{e.__name__}"},
        }
        for e in ALL_EVENTS
    }
    channels = {
        s.name: {
            "address": s.name,
            "description": f"{s.description} Dead letters: `{s.dlq}`.",
            "messages": {
                e.__name__: {"$ref": f"#/components/messages/{e.__name__}"} for e in s.events
            },
        }
        for s in ALL_STREAMS
    }
    operations = {
        f"{group}.{s.name}": {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{s.name}"},
            "summary": f"Consumer group `{group}` reads `{s.name}`.",
        }
        for s in ALL_STREAMS
        for group in s.groups
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Cofounder build pipeline events",
            "version": "1.0.0",
            "description": WIRE_FORMAT,
        },
        "servers": {
            "redis": {
                "host": "localhost:6379",
                "protocol": "redis",
                "description": "Redis Streams, read with consumer groups.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": components},
    }


def _anchor(heading: str) -> str:
    """The fragment a Markdown renderer (GitHub's) gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _duration(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} s"


def _event_link(event: type[Event]) -> str:
    name = event.event_type()
    return f"[`{name}`](schemas/{name}.json)"


def _groups(stream: Stream) -> str:
    return ", ".join(f"`{g}`" for g in stream.groups) or "none here"


def _stream_section(stream: Stream) -> str:
    retention = f"{_duration(stream.max_age)}, at most {stream.max_len:,} entries"
    if not stream.groups:
        retention = f"at most {stream.max_len:,} entries (no group here trims it by age)"
    rows = "\n".join(f"| {_event_link(e)} | {summary(e)} |" for e in stream.events)
    return (
        f"### `{stream.name}`\n\n{stream.description}\n\n"
        f"- consumer groups: {_groups(stream)}\n"
        f"- dead letters: `{stream.dlq}`\n"
        f"- retention: {retention}\n\n"
        f"| event | what it says |\n| --- | --- |\n{rows}"
    )


def _envelope_rows() -> str:
    fields = {f.name: f for f in msgspec.structs.fields(Event)}
    described = set(ENVELOPE_FIELDS) - {"type"}
    if described != set(fields):
        raise ValueError(
            f"ENVELOPE_FIELDS must describe exactly the envelope's fields: {sorted(fields)}"
        )
    user_level = ", ".join(
        f"`{e.event_type()}`"
        for e in ALL_EVENTS
        if next(f for f in msgspec.structs.fields(e) if f.name == "build_id").type == UuidOrEmpty
    )
    rows = []
    for name, text in ENVELOPE_FIELDS.items():
        required = name == "type" or fields[name].required
        rows.append(
            f"| `{name}` | {'yes' if required else 'no'} | {text.format(user_level=user_level)} |"
        )
    return "\n".join(rows)


def readme() -> str:
    """The catalog's page: :data:`README_TEMPLATE` filled from the envelope and the streams."""
    summary_rows = "\n".join(
        f"| [`{s.name}`](#{_anchor(s.name)}) | "
        f"{', '.join(f'`{e.event_type()}`' for e in s.events)} | {_groups(s)} |"
        for s in ALL_STREAMS
    )
    return README_TEMPLATE.format(
        envelope=_envelope_rows(),
        summary=summary_rows,
        streams="\n\n".join(_stream_section(s) for s in ALL_STREAMS),
    )


def export(out_dir: Path) -> list[Path]:
    """Write ``schemas/<type>.json`` per event, ``asyncapi.json`` and ``README.md``; return the
    paths written."""
    schemas = out_dir / "schemas"
    schemas.mkdir(parents=True, exist_ok=True)
    written = []
    for event in ALL_EVENTS:
        path = schemas / f"{event.event_type()}.json"
        path.write_text(_dumps(event_schema(event)))
        written.append(path)
    path = out_dir / "asyncapi.json"
    path.write_text(_dumps(asyncapi()))
    written.append(path)
    path = out_dir / "README.md"
    path.write_text(readme())
    written.append(path)
    return written
