"""The event catalog for other languages: JSON Schema per event, AsyncAPI 3 for the streams.

``python -m cofounder_contracts docs/events`` (or ``cofounder events export``) rewrites the files;
a test checks the committed ones equal a fresh export, so the catalog cannot go stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import msgspec

from cofounder_contracts.envelope import Event
from cofounder_contracts.events import ALL_EVENTS
from cofounder_contracts.streams import ALL_STREAMS

__all__ = ["asyncapi", "event_schema", "export"]

WIRE_FORMAT: Final = (
    "Each stream entry has three fields: `type` (the dotted event name, e.g. `build.requested`), "
    "`event_id` (a UUIDv7, the idempotency key) and `data` (the event as UTF-8 JSON, `type` "
    "included). Route on `type` and deduplicate on `event_id` without decoding `data`. "
    "Unknown fields in `data` must be ignored; new fields always have defaults. Entries that a "
    "consumer group cannot handle go to `<stream>.dlq` with `dlq.*` fields saying why."
)


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


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
            "summary": (e.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
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


def export(out_dir: Path) -> list[Path]:
    """Write ``schemas/<type>.json`` per event and ``asyncapi.json``; return the paths written."""
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
    return written
