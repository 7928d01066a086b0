"""Constrained field types shared by events. Decoding enforces them, so an entry carrying, say,
negative token counts never reaches a handler: it is dead-lettered with the reason."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["Count", "Micros", "NonEmpty"]

#: A count of things (tokens, files, bytes, milliseconds): an integer, zero or more.
Count = Annotated[int, msgspec.Meta(ge=0)]
#: An amount of money in micro-units of the plan's currency (integers: no float drift).
Micros = Annotated[int, msgspec.Meta(ge=0)]
#: A string that must say something.
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
