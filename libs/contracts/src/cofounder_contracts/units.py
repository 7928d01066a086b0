"""Constrained field types shared by events. Decoding enforces them, so an entry carrying, say,
negative token counts never reaches a handler: it is dead-lettered with the reason.

Text that a consumer writes to a PostgreSQL column is held to what the column holds: no NUL
(``text`` and ``varchar`` refuse ``\\x00``), and a ``varchar``'s length. The database's refusal
would fail the handler, retried ``max_deliveries`` times before the entry is dead-lettered; the
contract's is a decode error, dead-lettered at once with the reason.

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
    "NO_NUL",
    "ArtifactType",
    "Count",
    "DurationMs",
    "Micros",
    "ModelName",
    "NonEmpty",
    "NonEmptyStoredText",
    "StepCount",
    "StoredText",
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

#: The pattern of text PostgreSQL can store: no NUL character.
NO_NUL: Final = r"^[^\x00]*$"
#: Text a consumer writes to a PostgreSQL ``text`` column (``builds.error``,
#: ``builds.preview_url``, ``budget_topups.note``): any length, no NUL.
StoredText = Annotated[
    str, msgspec.Meta(pattern=NO_NUL, description="Text without NUL characters (stored).")
]
#: :data:`StoredText` that must say something.
NonEmptyStoredText = Annotated[
    str,
    msgspec.Meta(
        min_length=1, pattern=NO_NUL, description="Non-empty text without NUL characters (stored)."
    ),
]
#: A model's name, as ``budget_ledger.model`` (``String(100)``) holds it.
ModelName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=NO_NUL,
        description="A model's name: 1 to 100 characters, no NUL (budget_ledger.model).",
    ),
]
#: An artifact's type, as ``artifacts.artifact_type`` (``String(60)``) holds it.
ArtifactType = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=60,
        pattern=NO_NUL,
        description="An artifact's type: 1 to 60 characters, no NUL (artifacts.artifact_type).",
    ),
]
