"""Events kept as plain data inside other records (the agent runner's checkpoints hold the events
of a turn, a sleep and an end, written with ``msgspec.to_builtins``) and read back."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from cofounder_contracts.envelope import Event
from cofounder_contracts.events import ALL_EVENTS

__all__ = ["from_stored"]

_TYPES: Final = {t.event_type(): t for t in ALL_EVENTS}


def from_stored(data: dict[str, Any]) -> Event:
    """The event ``data`` holds (its ``type`` tag names which); ``KeyError`` for an unknown
    type, ``msgspec.ValidationError`` for data that does not fit it."""
    event: Event = msgspec.convert(data, type=_TYPES[data["type"]])
    return event
