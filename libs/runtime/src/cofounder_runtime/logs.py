"""structlog configuration: JSON lines on stdout, with the event being handled bound to every line.

The consumer sets :data:`HANDLING` to the event at the start of each handler (each handler runs in
its own copy of the context); :func:`add_event_context` adds its ``event_id``, ``build_id`` and
``event_type`` to every log line written while it runs. One ``ContextVar.set`` per event is much
cheaper than binding three structlog context variables, and the values are only read when a line
is actually logged. ``structlog.contextvars.bind_contextvars`` works as usual for anything else.
"""

from __future__ import annotations

import contextvars
import json as jsonlib
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from cofounder_contracts.envelope import Event

__all__ = ["HANDLING", "REDACTED", "Scrubber", "add_event_context", "configure_logging"]

#: What a secret's value becomes in a log line.
REDACTED = "[redacted]"

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


class Scrubber:
    """The last processor: removes every secret's value from the rendered line.

    A line is text by then, so this catches a secret wherever it came from (an exception's
    message, a library's repr, a field someone logged by mistake). Each secret is looked for as
    written, JSON-escaped and ``repr``-escaped. One precompiled alternation: one scan per line.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.update(
                    (
                        secret,
                        jsonlib.dumps(secret)[1:-1],
                        jsonlib.dumps(secret, ensure_ascii=False)[1:-1],
                        repr(secret)[1:-1],
                    )
                )
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def scrub(self, line: str) -> str:
        """``line`` with every secret replaced by :data:`REDACTED`."""
        if self._pattern is None:
            return line
        return self._pattern.sub(REDACTED, line)

    def __call__(self, _logger: Any, _method: str, rendered: Any) -> Any:
        if isinstance(rendered, str):
            return self.scrub(rendered)
        if isinstance(rendered, bytes):
            return self.scrub(rendered.decode("utf-8", "replace")).encode()
        return rendered


def configure_logging(
    *, level: str = "INFO", json: bool = True, secrets: Iterable[str] = ()
) -> None:
    """Configure structlog and the standard library's loggers once per process.

    Both write the same lines: JSON (or the console format) with a level and a timestamp;
    structlog's on stdout, the standard library's (uvicorn, asyncio, botocore) on stderr.
    Tracebacks carry frames but never their local variables (a frame of a composition root
    holds the settings); ``secrets`` (see :func:`cofounder_runtime.secrets.secret_values`) are
    removed from every line before it is written.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    scrubber = Scrubber(secrets)
    exceptions: structlog.typing.Processor
    renderer: structlog.typing.Processor
    if json:
        exceptions = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer()
    else:
        exceptions = structlog.dev.set_exc_info
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_event_context,
            structlog.processors.add_log_level,
            stamp,
            exceptions,
            renderer,
            scrubber,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                add_event_context,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exceptions,
                renderer,
                scrubber,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
