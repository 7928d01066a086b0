"""The one wire format: a stream entry holds ``type``, ``event_id`` and ``data`` (JSON bytes).

``type`` and ``event_id`` sit beside the payload so any consumer (in any language) can route,
deduplicate and dead-letter an entry without decoding it. ``data`` is the event as JSON, tag
included, so it decodes on its own too.

One ``msgspec.json.Encoder`` is shared; a :class:`Codec` keeps one typed decoder per event type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Final

import msgspec

from cofounder_contracts.envelope import Event

__all__ = [
    "DATA",
    "EVENT_ID",
    "TYPE",
    "Codec",
    "DecodeError",
    "UnknownEventType",
    "encode",
    "encode_fields",
    "payload_digest",
]

TYPE: Final = b"type"
EVENT_ID: Final = b"event_id"
DATA: Final = b"data"

_encoder: Final = msgspec.json.Encoder()


class DecodeError(ValueError):
    """An entry that cannot become an event: missing fields, bad JSON, or a schema mismatch."""


class UnknownEventType(DecodeError):
    """An entry whose ``type`` this codec was not built for."""


def encode(event: Event) -> bytes:
    """The event as JSON bytes (the ``data`` field)."""
    return _encoder.encode(event)


def encode_fields(event: Event) -> dict[bytes, bytes]:
    """The stream entry fields for ``event``: ``type``, ``event_id`` and ``data``."""
    return {
        TYPE: event.type.encode(),
        EVENT_ID: event.event_id.encode(),
        DATA: _encoder.encode(event),
    }


class Codec:
    """Decodes stream entries into events of a known set of types.

    Decoding is typed per event type (no union dispatch over the payload), so an entry of a type
    the codec does not know is reported as :class:`UnknownEventType` before any JSON is parsed.
    """

    __slots__ = ("_decoders",)

    def __init__(self, types: Iterable[type[Event]]) -> None:
        self._decoders: dict[bytes, msgspec.json.Decoder[Event]] = {
            t.event_type().encode(): msgspec.json.Decoder(t) for t in types
        }

    def knows(self, type_: bytes) -> bool:
        """Whether ``type_`` (the raw ``type`` field) is one of this codec's types."""
        return type_ in self._decoders

    def decode(self, fields: Mapping[bytes, bytes]) -> Event:
        """Decode an entry's fields; raise :class:`DecodeError` with the reason when impossible."""
        try:
            type_ = fields[TYPE]
            data = fields[DATA]
        except KeyError as exc:
            raise DecodeError(f"entry has no {exc.args[0]!r} field") from None
        decoder = self._decoders.get(type_)
        if decoder is None:
            raise UnknownEventType(f"unknown event type {type_!r}")
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"{type_.decode(errors='replace')}: {exc}") from None


_DIGEST_ENCODER: Final = msgspec.json.Encoder()
_NO_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)


def payload_digest(event: Event) -> str:
    """A digest of what ``event`` says, to tell a redelivery from another event reusing its id.

    ``occurred_at``, ``trace`` and the event's ``MEASURED`` fields are left out: an event made
    again (a handler re-deriving it on a redelivery, with the same deterministic id) has a new
    time, a new span (with tracing on) and may have measured differently, and is still the same
    event. 32 hex digits (128 bits of SHA-256).
    """
    plain = msgspec.structs.replace(event, occurred_at=_NO_TIME, trace=None)
    if event.MEASURED:
        fields = msgspec.to_builtins(plain)
        for name in event.MEASURED:
            fields.pop(name, None)
        return hashlib.sha256(_DIGEST_ENCODER.encode(fields)).hexdigest()[:32]
    return hashlib.sha256(_DIGEST_ENCODER.encode(plain)).hexdigest()[:32]
