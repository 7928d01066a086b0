"""structlog configuration: JSON lines on stdout, with the event being handled bound to every line.

The consumer sets :data:`HANDLING` to the event at the start of each handler (each handler runs in
its own copy of the context); :func:`add_event_context` adds its ``event_id``, ``build_id`` and
``event_type`` to every log line written while it runs. One ``ContextVar.set`` per event is much
cheaper than binding three structlog context variables, and the values are only read when a line
is actually logged. ``structlog.contextvars.bind_contextvars`` works as usual for anything else.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from cofounder_contracts.envelope import Event

__all__ = ["HANDLING", "add_event_context", "configure_logging"]

#: The event whose handler is running in this context, if any.
HANDLING: contextvars.ContextVar[Event | None] = contextvars.ContextVar(
    "cofounder_handling", default=None
)


def add_event_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the handled event's ids (explicit keys win)."""
    event = HANDLING.get()
    if event is not None:
        event_dict.setdefault("event_id", event.event_id)
        event_dict.setdefault("build_id", event.build_id)
        event_dict.setdefault("event_type", event.type)
    return event_dict


def configure_logging(*, level: str = "INFO", json: bool = True) -> None:
    """Configure structlog and the standard library's root logger once per process."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_event_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
