"""Constrained field types shared by events. Decoding enforces them, so an entry carrying, say,
negative token counts never reaches a handler: it is dead-lettered with the reason.

Every number has an upper bound too, and the bound lives here, not in a consumer: every consumer
of an event decodes it with these types, so all of them refuse the same entry (the budget service
and the gateway's projection cannot disagree about a usage of 10^12 tokens).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

__all__ = [
    "MAX_DURATION_MS",
    "MAX_SAFE_INT",
    "MAX_STEPS",
    "MAX_TOKENS_PER_CALL",
    "Count",
    "DurationMs",
    "Micros",
    "NonEmpty",
    "StepCount",
    "TokenCount",
]

#: The largest integer every JSON reader holds exactly (JavaScript's ``Number.MAX_SAFE_INTEGER``):
#: the build feed carries events to browsers.
MAX_SAFE_INT: Final = 2**53 - 1
#: More tokens than any model call reports in one field (context windows are ~1M): a bug upstream,
#: not usage.
MAX_TOKENS_PER_CALL: Final = 5_000_000
#: Iterations, tool calls, versions and sequence numbers: a plan allows a build 150 to 300 tool
#: calls, so a million is a bug upstream (and well inside the 32-bit ``INTEGER`` columns they land
#: in: ``builds``, ``agent_checkpoints``, ``build_versions``).
MAX_STEPS: Final = 1_000_000
#: A week: longer than anything an event times (a build's wall time is 4 hours by default, a tool
#: call's minutes).
MAX_DURATION_MS: Final = 7 * 24 * 3600 * 1000

#: A count of things (files, bytes, blobs): an integer, zero or more.
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INT)]
#: Tokens of one model call, in one of its usage fields.
TokenCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS_PER_CALL)]
#: An iteration, a number of tool calls, a version or a sequence number.
StepCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_STEPS)]
#: How long something took, in milliseconds.
DurationMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_MS)]
#: An amount of money in micro-units of the plan's currency (integers: no float drift).
Micros = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INT)]
#: A string that must say something.
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
