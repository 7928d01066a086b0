"""structlog configuration: JSON lines on stdout, with the event being handled bound to every line.

The consumer sets :data:`HANDLING` to the event at the start of each handler (each handler runs in
its own copy of the context); :func:`add_event_context` adds its ``event_id``, ``build_id`` and
``event_type`` to every log line written while it runs. One ``ContextVar.set`` per event is much
cheaper than binding three structlog context variables, and the values are only read when a line
is actually logged. ``structlog.contextvars.bind_contextvars`` works as usual for anything else.
With tracing on (:mod:`cofounder_runtime.tracing`), :func:`add_trace_context` adds the current
span's ``trace_id`` and ``span_id``.
"""

from __future__ import annotations

import contextvars
import json as jsonlib
import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from cofounder_contracts.envelope import Event
from cofounder_runtime import tracing

__all__ = [
    "HANDLING",
    "REDACTED",
    "Scrubber",
    "add_event_context",
    "add_trace_context",
    "configure_logging",
]

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


def add_trace_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the current span, when tracing is on
    and a span is current (one bool test when it is off)."""
    if tracing.ENABLED:
        ids = tracing.current_ids()
        if ids is not None:
            event_dict.setdefault("trace_id", ids[0])
            event_dict.setdefault("span_id", ids[1])
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
    structlog's on stdout, the standard library's (uvicorn, httpx, asyncio, alembic, botocore:
    every logger, one that had a console handler of its own included) on stderr through
    structlog's ``ProcessorFormatter``, and so do Python's own reports (warnings, an exception
    that ends a thread, "Exception ignored in …"): with ``json``, every line is one JSON object.
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
            add_trace_context,
            structlog.processors.add_log_level,
            stamp,
            exceptions,
            renderer,
            scrubber,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (print() makes two: the line, then its newline, and another
        # thread's line may come between them when the stream is unbuffered, as in the image).
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                add_event_context,
                add_trace_context,
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
    _through_the_root(root)
    _python_reports_as_lines()


def _through_the_root(root: logging.Logger) -> None:
    """Every library logger's lines through the root's handler: a logger that was given a
    console handler of its own (a library's ``dictConfig``, ``alembic.ini``'s ``fileConfig``)
    loses it and propagates, so no line is written in its own format."""
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger) or logger is root:
            continue
        # Any plain StreamHandler, whatever stream it holds: one configured earlier holds the
        # sys.stderr of then (a test's capture, a replaced stream), not today's.
        console = [h for h in logger.handlers if type(h) is logging.StreamHandler]
        for handler in console:
            logger.removeHandler(handler)
        if console:
            logger.propagate = True


_hooked = False


def _python_reports_as_lines() -> None:
    """What Python itself would print on stderr, as log lines (logger ``python``, or
    ``py.warnings``): warnings, an exception that ends a thread or the program, and an
    "Exception ignored in …" (``sys.unraisablehook``). A hook someone else installed (a test
    runner's) still runs after ours; Python's default, which prints, does not."""
    global _hooked  # noqa: PLW0603 - installed once per process
    logging.captureWarnings(True)
    if _hooked:
        return
    _hooked = True
    report = logging.getLogger("python")
    previous_thread, previous_unraisable = threading.excepthook, sys.unraisablehook
    previous_main = sys.excepthook

    def thread_failed(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit:
            report.error(
                "exception in thread %s",
                args.thread.name if args.thread is not None else "?",
                exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
            )
        if previous_thread is not threading.__excepthook__:
            previous_thread(args)

    def unraisable(args: Any) -> None:
        report.error(
            "%s: %r",
            args.err_msg or "Exception ignored in",
            args.object,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )
        if previous_unraisable is not sys.__unraisablehook__:
            previous_unraisable(args)

    def uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt) or previous_main is not sys.__excepthook__:
            previous_main(kind, value, tb)
            return
        report.critical("uncaught exception", exc_info=(kind, value, tb))

    threading.excepthook = thread_failed
    sys.unraisablehook = unraisable
    sys.excepthook = uncaught
