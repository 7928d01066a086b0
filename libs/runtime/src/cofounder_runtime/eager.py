"""Eager handler start: run a handler synchronously until it first really waits.

Most handlers of a busy stream finish without suspending, or suspend once on I/O. Creating an
``asyncio.Task`` per entry up front costs more than such a handler (Python 3.12's
``eager_task_factory`` exists for this reason; we run on 3.11). So the consumer steps the
coroutine once itself; only if it suspends is a Task made to carry on from there.

:func:`_resume` is a generator-based awaitable that re-yields the future the coroutine is
blocked on (so the Task waits for it, exactly as ``await`` would) and then keeps driving the
coroutine, passing cancellation through with ``throw``.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["start_eagerly"]


@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], yielded: Any) -> Generator[Any, Any, None]:
    try:
        # Parked here (by one ``send`` in start_eagerly) until the Task's first step, so that a
        # Task cancelled before it ever ran still throws into a started frame, which forwards it.
        yield
    except BaseException as exc:  # noqa: BLE001 - forwarded to the handler
        try:
            yielded = coro.throw(exc)
        except StopIteration:
            return
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # noqa: BLE001 - cancellation and throws go to the handler
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration:
                return


def start_eagerly(
    coro: Coroutine[Any, Any, None], *, context: contextvars.Context, name: str | None = None
) -> asyncio.Task[None] | None:
    """Step ``coro`` in ``context``; return a Task carrying on if it suspended, else None.

    Exceptions raised by the synchronous part propagate to the caller, like a direct call would.
    """
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return None
    carry_on = _resume(coro, yielded)
    carry_on.send(None)
    loop = asyncio.get_running_loop()
    return loop.create_task(carry_on, name=name, context=context)
