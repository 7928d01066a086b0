"""The types every request input is declared with: what the stores can hold, checked at the edge.

Every path, query, header and body value the gateway hands to PostgreSQL or Redis is declared
with one of these types, so a value the store would refuse is a 422 problem before any I/O (and
the OpenAPI document says so), never a driver error answered with a 500:

- :data:`Text`: no NUL (PostgreSQL's ``text`` and ``varchar`` cannot hold ``\\x00``) and no
  unpaired surrogate (not encodable as UTF-8). Lengths are the columns' (``cofounder_db.models``),
  given with ``Field(max_length=...)`` where a field is declared;
- :data:`Uuid`: the ids the gateway mints (``uuid4``) in their canonical 8-4-4-4-12 form
  (lower-cased, as stored); anything else is no id of ours;
- :data:`JsonObject`: a JSON object whose strings, keys and values, are all :data:`Text`;
- :data:`Cursor`: a page cursor's alphabet (URL-safe base64); ``builds`` decodes it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Header, Path, Query
from fastapi.openapi.models import Example
from pydantic import AfterValidator, BeforeValidator, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "NO_NUL",
    "BuildId",
    "Cursor",
    "Email",
    "IdempotencyKey",
    "JsonObject",
    "LastEventId",
    "PageCursor",
    "ProjectId",
    "Text",
    "UserId",
    "Uuid",
    "is_stream_id",
    "is_uuid",
    "storable",
]

#: The pattern :data:`Text` documents (and enforces): no NUL character.
NO_NUL = r"^[^\x00]*$"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
#: A Redis stream entry id: ``<ms>-<seq>``, both unsigned 64-bit decimal (XREAD's range).
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_U64_MAX = 2**64 - 1


def storable(value: object) -> object:
    """Refuse text PostgreSQL cannot store, saying why (a ``BeforeValidator``: it runs before
    the documented pattern, whose generic message would not say why)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise PydanticCustomError(
                "nul_character", "must not contain NUL (\\x00) characters: they cannot be stored"
            )
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise PydanticCustomError(
                    "unpaired_surrogate",
                    "must be valid Unicode: an unpaired surrogate cannot be stored",
                ) from None
    return value


def is_uuid(value: str) -> bool:
    """Whether ``value`` is a UUID in the 8-4-4-4-12 form (either case)."""
    return _UUID.fullmatch(value) is not None


def _canonical_uuid(value: str) -> str:
    if not is_uuid(value):
        raise PydanticCustomError(
            "uuid", "must be a UUID such as 0b4e6c1e-8d0a-4f5e-9c1b-2a3d4e5f6a7b"
        )
    return value.lower()


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            storable(item)
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


def is_stream_id(value: str) -> bool:
    """Whether Redis accepts ``value`` as a stream id to read after: ``<ms>-<seq>``, both
    unsigned 64-bit (`XREAD <https://redis.io/docs/latest/commands/xread/>`_ refuses larger
    numbers, which would otherwise surface inside an already-started event stream)."""
    match = _STREAM_ID.fullmatch(value)
    return match is not None and all(int(part) <= _U64_MAX for part in match.groups())


#: Text PostgreSQL can store. Give the column's length with ``Field(max_length=...)``.
Text = Annotated[str, StringConstraints(pattern=NO_NUL), BeforeValidator(storable)]
#: An id the gateway minted, canonical (lower-case): other values are 422, never a query.
Uuid = Annotated[
    str, AfterValidator(_canonical_uuid), WithJsonSchema({"type": "string", "format": "uuid"})
]
#: A JSON object whose every string (keys too) is :data:`Text`.
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable_json)]
#: An e-mail address as ``users.email`` holds it (``String(320)``).
Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=320, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$"),
    BeforeValidator(storable),
]
#: A page cursor as ``GET /v1/builds`` returns it (URL-safe base64 without padding).
Cursor = Annotated[str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9_-]*$")]


def _id_example(value: str) -> dict[str, Example]:
    return {"id": Example(summary="an id", value=value)}


BuildId = Annotated[
    Uuid,
    Path(
        description="The build's id.",
        openapi_examples=_id_example("0195a0e2-7c1d-7d4e-9a2b-3c4d5e6f7a8b"),
    ),
]
ProjectId = Annotated[
    Uuid,
    Path(
        description="The project's id.",
        openapi_examples=_id_example("0195a0e1-1b2c-7d3e-8f4a-5b6c7d8e9f0a"),
    ),
]
UserId = Annotated[
    Uuid,
    Path(
        description="The user's id.",
        openapi_examples=_id_example("0195a0e0-4d5e-7f6a-8b7c-9d0e1f2a3b4c"),
    ),
]
#: The ``Idempotency-Key`` header (``builds.idempotency_key``, ``String(200)``). The length is
#: part of the string type: given on the optional header, pydantic would word it as "items".
#: An empty key is refused (422), not stored: a client that always sends the header empty
#: would otherwise have its second, different build answered 409 ``idempotency_key_reused``.
IdempotencyKey = Annotated[
    Annotated[
        str,
        StringConstraints(min_length=1, max_length=200, pattern=NO_NUL),
        BeforeValidator(storable),
    ]
    | None,
    Header(
        description="Repeat a request safely: the same key returns the build it created.",
    ),
]
#: The ``Last-Event-ID`` header (checked with :func:`is_stream_id`: 400 when it is no id).
LastEventId = Annotated[
    str | None,
    Header(
        max_length=41,
        description="Resume after this event id (`<ms>-<seq>`, as sent in the stream's `id:`).",
    ),
]
#: The ``cursor`` query parameter of a paged list.
PageCursor = Annotated[Cursor | None, Query(description="`next_cursor` of the previous page.")]
