"""The envelope every event shares.

Events are frozen, keyword-only msgspec structs tagged by their dotted name in the ``type`` field
(``tag_field="type"``). Envelope metadata are real fields, so a consumer reads ``event.build_id``
rather than digging in a headers dict.

Evolution rules (checked by the compatibility tests): a new field gets a default; no field is
renamed or retyped; unknown fields are ignored on decode (msgspec's default for structs).

Every id is typed (:mod:`cofounder_contracts.ids`): ``build_id`` and ``project_id`` are UUIDs on
every event but the user-level ones, which redeclare them as :data:`~cofounder_contracts.ids.
UuidOrEmpty` (a field redeclared by a subclass keeps its place).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import ClassVar, TypedDict

import msgspec

from cofounder_contracts.ids import Uuid, derived_event_id, new_event_id

__all__ = ["Envelope", "Event", "envelope", "follow_up", "set_trace_source", "utcnow"]

#: The current span's ``traceparent`` (None outside any span), set while tracing is on
#: (``cofounder_runtime.tracing``); None when it is off, and then no envelope looks for one.
_trace_source: Callable[[], str | None] | None = None


def set_trace_source(source: Callable[[], str | None] | None) -> None:
    """Where :func:`envelope` and :func:`follow_up` read the current trace context from (the
    tracing runtime installs it when tracing is on; None: off)."""
    global _trace_source  # noqa: PLW0603 - one per process, read on every envelope
    _trace_source = source


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only clock events carry)."""
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event. Subclasses set ``tag=`` to their dotted name.

    ``build_id``, ``project_id`` and ``user_id`` are carried by every event so that any consumer
    can route, partition and authorise without a lookup. ``causation_id`` is the ``event_id`` of
    the event that caused this one; ``trace`` is a W3C ``traceparent`` when tracing is on.
    """

    #: Bumped when a struct gains fields whose absence older readers must know about.
    SCHEMA_VERSION: ClassVar[int] = 1
    #: Fields that measure how the event was made rather than say what happened (a duration):
    #: the same event made again under its id may differ there (``payload_digest`` skips them).
    MEASURED: ClassVar[frozenset[str]] = frozenset()

    build_id: Uuid
    project_id: Uuid
    user_id: Uuid
    producer: str
    event_id: Uuid = msgspec.field(default_factory=new_event_id)
    schema_version: int = 1
    occurred_at: datetime = msgspec.field(default_factory=utcnow)
    causation_id: Uuid | None = None
    trace: str | None = None

    @property
    def type(self) -> str:
        """The dotted event name, e.g. ``build.requested`` (the struct's tag)."""
        tag = self.__struct_config__.tag
        assert isinstance(tag, str), f"{type(self).__name__} has no string tag"
        return tag

    @classmethod
    def event_type(cls) -> str:
        """The dotted event name of this class, without an instance."""
        tag = cls.__struct_config__.tag
        assert isinstance(tag, str), f"{cls.__name__} has no string tag"
        return tag


class Envelope(TypedDict):
    """The envelope fields of a new event, made by :func:`envelope` or :func:`follow_up` and
    spread into the event: ``SomeEvent(**follow_up(cause, producer=..., kind=...), ...)``."""

    build_id: str
    project_id: str
    user_id: str
    producer: str
    event_id: str
    causation_id: str | None
    trace: str | None


def envelope(
    *,
    build_id: str,
    project_id: str,
    user_id: str,
    producer: str,
    causation_id: str | None = None,
    trace: str | None = None,
    kind: str | None = None,
    derive_from: str | None = None,
) -> Envelope:
    """The envelope of a new event: the one place every producer builds one.

    With ``kind``, the event id is derived (:func:`~cofounder_contracts.ids.derived_event_id`)
    from ``derive_from``, else the cause, else the build: the same event made again, after a
    redelivery or a crash, gets the same id and downstream counts it once. Without, a new id.

    ``trace``, when not given and tracing is on, is the current span's context (so the event's
    consumers are its children); with tracing off it stays None.
    """
    if trace is None and _trace_source is not None:
        trace = _trace_source()
    if kind is None:
        event_id = new_event_id()
    else:
        event_id = derived_event_id(derive_from or causation_id or build_id, kind)
    return Envelope(
        build_id=build_id,
        project_id=project_id,
        user_id=user_id,
        producer=producer,
        event_id=event_id,
        causation_id=causation_id,
        trace=trace,
    )


def follow_up(
    cause: Event, *, producer: str, kind: str | None = None, derive_from: str | None = None
) -> Envelope:
    """The envelope of an event that ``cause`` led to: same build, project, user and trace,
    ``causation_id`` pointing back at it, and (with ``kind``) an id derived from the cause's
    (or from ``derive_from``'s).

    The trace context is the current span's when tracing is on and a span is current (in a
    handler: its span, a child of the one that made ``cause``, so the new event's consumers
    hang under the work that made it); else ``cause.trace`` as it came (a process with tracing
    off passes the trace on whole). It is not part of what the event says: a redelivery may
    make the same event under another span (``payload_digest`` leaves it out).
    """
    trace = _trace_source() if _trace_source is not None else None
    return envelope(
        build_id=cause.build_id,
        project_id=cause.project_id,
        user_id=cause.user_id,
        producer=producer,
        causation_id=cause.event_id,
        trace=trace or cause.trace,
        kind=kind,
        derive_from=derive_from,
    )
