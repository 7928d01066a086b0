"""The periodic-loop helper: a step per interval, failures logged and retried, a stop that ends
the wait at once but never a step."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from cofounder_runtime.periodic import every, stopped_within


class _Log:
    """A structlog-shaped logger that keeps its warnings."""

    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, message: str, **fields: Any) -> None:
        self.warnings.append((message, fields))


class _Counter:
    """Counts the steps; :meth:`reached` waits for the ``n``-th."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Condition()

    async def tick(self) -> int:
        async with self._changed:
            self.count += 1
            self._changed.notify_all()
        return self.count

    async def reached(self, n: int) -> None:
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(lambda: self.count >= n)


async def test_the_step_runs_now_then_every_interval_until_stopped() -> None:
    stop = asyncio.Event()
    runs: list[float] = []
    loop = asyncio.get_running_loop()
    counter = _Counter()

    async def step() -> None:
        runs.append(loop.time())
        await counter.tick()

    task = asyncio.create_task(every(0.02, step, stop, name="ticker"))
    await counter.reached(4)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert all(later - earlier >= 0.015 for earlier, later in itertools.pairwise(runs))
    count = len(runs)
    await asyncio.sleep(0.05)
    assert len(runs) == count  # nothing after the stop


async def test_a_failing_step_is_logged_with_the_loops_name_and_tried_again() -> None:
    stop = asyncio.Event()
    log = _Log()
    counter = _Counter()

    async def step() -> None:
        calls = await counter.tick()
        if calls <= 2:
            raise ConnectionError(f"down {calls}")

    task = asyncio.create_task(every(0.001, step, stop, name="flaky", log=log))
    await counter.reached(4)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert log.warnings[:2] == [
        ("flaky failed; retrying", {"loop": "flaky", "error": "ConnectionError('down 1')"}),
        ("flaky failed; retrying", {"loop": "flaky", "error": "ConnectionError('down 2')"}),
    ]
    assert len(log.warnings) == 2


async def test_the_failure_message_is_the_callers() -> None:
    stop = asyncio.Event()
    log = _Log()

    async def step() -> None:
        stop.set()
        raise RuntimeError("boom")

    await asyncio.wait_for(every(60, step, stop, name="wake", log=log, failed="wake failed"), 1)
    assert log.warnings == [("wake failed", {"loop": "wake", "error": "RuntimeError('boom')"})]


async def test_a_stop_ends_the_wait_at_once() -> None:
    stop = asyncio.Event()
    counter = _Counter()

    task = asyncio.create_task(every(3600, counter.tick, stop, name="hourly"))
    await counter.reached(1)
    stop.set()
    await asyncio.wait_for(task, 1)  # not an hour
    assert counter.count == 1


async def test_a_stop_during_a_step_lets_the_step_finish() -> None:
    stop = asyncio.Event()
    started, finished = asyncio.Event(), []

    async def step() -> None:
        started.set()
        await asyncio.sleep(0.05)
        finished.append(True)

    task = asyncio.create_task(every(3600, step, stop, name="slow"))
    await started.wait()
    stop.set()
    await asyncio.wait_for(task, 1)
    assert finished == [True]


async def test_not_immediately_waits_an_interval_first() -> None:
    stop = asyncio.Event()
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1

    task = asyncio.create_task(every(3600, step, stop, name="later", immediately=False))
    await asyncio.sleep(0.02)
    assert runs == 0
    stop.set()
    await asyncio.wait_for(task, 1)
    assert runs == 0


async def test_a_step_ends_the_loop_by_setting_stop() -> None:
    stop = asyncio.Event()
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            stop.set()

    await asyncio.wait_for(every(0.001, step, stop, name="until-lost"), 1)
    assert runs == 3


async def test_an_already_set_stop_runs_nothing() -> None:
    stop = asyncio.Event()
    stop.set()

    async def step() -> None:
        raise AssertionError("ran")

    await asyncio.wait_for(every(0.001, step, stop, name="never"), 1)
    await asyncio.wait_for(every(3600, step, stop, name="never", immediately=False), 1)


async def test_jitter_spreads_the_waits_within_its_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = asyncio.Event()
    waits: list[float] = []

    async def stopped_after(event: asyncio.Event, seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) >= 50

    monkeypatch.setattr("cofounder_runtime.periodic.stopped_within", stopped_after)

    async def step() -> None:
        return None

    await every(10, step, stop, name="spread", jitter=0.2)
    assert all(8 <= w <= 12 for w in waits)
    assert len(set(waits)) > 1
    with pytest.raises(ValueError, match="jitter"):
        await every(10, step, stop, name="bad", jitter=1.5)


async def test_a_cancellation_ends_the_loop() -> None:
    stop = asyncio.Event()

    async def step() -> None:
        await asyncio.sleep(3600)

    task = asyncio.create_task(every(1, step, stop, name="cancelled"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_stopped_within_says_whether_the_stop_came() -> None:
    stop = asyncio.Event()
    assert await stopped_within(stop, 0.001) is False
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await asyncio.wait_for(stopped_within(stop, 3600), 1) is True
    assert await stopped_within(stop, 3600) is True
