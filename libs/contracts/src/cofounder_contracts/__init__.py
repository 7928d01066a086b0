"""Event contracts: the envelope, every event, the streams that carry them, and the wire codec."""

from cofounder_contracts import schema
from cofounder_contracts.codec import Codec, DecodeError, UnknownEventType, encode, encode_fields
from cofounder_contracts.envelope import Envelope, Event, envelope, follow_up, utcnow
from cofounder_contracts.events import *  # noqa: F403 - the catalog is the package's API
from cofounder_contracts.events import __all__ as _events
from cofounder_contracts.events.builds import TERMINAL_STATUSES, ends_build
from cofounder_contracts.ids import derived_event_id, new_event_id
from cofounder_contracts.streams import (
    ALL_STREAMS,
    Stream,
    build_feed_key,
    stream_for,
)

__all__ = [  # noqa: PLE0604 - extended with the events' names
    "ALL_STREAMS",
    "Codec",
    "DecodeError",
    "Event",
    "Envelope",
    "Stream",
    "TERMINAL_STATUSES",
    "UnknownEventType",
    "build_feed_key",
    "derived_event_id",
    "encode",
    "encode_fields",
    "ends_build",
    "envelope",
    "follow_up",
    "new_event_id",
    "schema",
    "stream_for",
    "utcnow",
    *_events,
]
