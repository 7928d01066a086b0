"""An event id seen again with another payload: two events claim one id, and neither may win.

Ids are deterministic (derived from their cause) so that a redelivery is recognised; a producer
bug or a forged event could reuse one with different content. Which of the two a consumer kept
would then be a race. The idempotency markers keep each event's :func:`payload_digest`, and a
second payload under a known id is refused: :class:`PayloadConflict` is a :class:`Poison`, so
the entry goes to the dead letters at once, with both digests in its error.
"""

from __future__ import annotations

from cofounder_runtime.consumer import Poison

__all__ = ["PayloadConflict"]


class PayloadConflict(Poison):
    """``event_id`` was applied before with a payload of another digest."""

    def __init__(self, event_id: str, *, seen: str, now: str) -> None:
        super().__init__(
            f"event {event_id} was seen before with another payload "
            f"(digest {seen}, now {now}); not applied"
        )
        self.event_id = event_id
        self.seen = seen
        self.now = now
