"""Eager handler start: synchronous completion, suspension, cancellation, context isolation."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from cofounder_runtime.eager import start_eagerly

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="outer")


async def test_a_handler_that_never_suspends_needs_no_task() -> None:
    seen: list[str] = []

    async def quick() -> None:
        VAR.set("inner")
        seen.append(VAR.get())

    assert start_eagerly(quick(), context=contextvars.copy_context()) is None
    assert seen == ["inner"]
    assert VAR.get() == "outer"  # the handler's context was a copy


async def test_a_suspending_handler_continues_in_a_task_with_its_context() -> None:
    gate = asyncio.Event()
    seen: list[str] = []

    async def waits() -> None:
        VAR.set("inner")
        seen.append("before")
        await gate.wait()
        await asyncio.sleep(0)
        seen.append(f"after:{VAR.get()}")

    task = start_eagerly(waits(), context=contextvars.copy_context())
    assert task is not None
    assert seen == ["before"]  # ran synchronously up to the first real wait
    gate.set()
    await task
    assert seen == ["before", "after:inner"]
    assert VAR.get() == "outer"


async def test_cancellation_reaches_the_handler() -> None:
    cleaned: list[bool] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    task = start_eagerly(forever(), context=contextvars.copy_context())
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_exceptions_propagate_from_either_part() -> None:
    async def fails_at_once() -> None:
        raise ValueError("sync part")

    with pytest.raises(ValueError, match="sync part"):
        start_eagerly(fails_at_once(), context=contextvars.copy_context())

    async def fails_later() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("async part")

    task = start_eagerly(fails_later(), context=contextvars.copy_context())
    assert task is not None
    with pytest.raises(ValueError, match="async part"):
        await task
