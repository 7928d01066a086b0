"""The service skeleton: a SIGTERM stops the consumers first, then the background loops, then
closes what the process opened, the last opened first; a failing background loop is logged,
not lost, and does not keep the others from stopping."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import structlog
from redis.asyncio import Redis

from cofounder_runtime.consumer import Consumer
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.service import ServiceProcess, run_service
from cofounder_runtime.settings import RuntimeSettings
from cofounder_testing.fixtures import Names
from cofounder_testing.inprocess import FAST, hash_ints
from cofounder_testing.probe import Probe, ProbeHandler, probe
from cofounder_testing.waiting import eventually

pytestmark = pytest.mark.integration


async def test_sigterm_stops_consumers_then_loops_then_closes_resources_in_reverse(
    redis: Redis, names: Names
) -> None:
    process = ServiceProcess(settings=RuntimeSettings(environment="development"), redis=redis)
    consumer = Consumer(
        redis,
        stream=names.stream,
        group=names.group,
        consumer="c1",
        handlers={Probe: ProbeHandler(redis, names.prefix)},
        options=FAST,
    )
    await consumer.ensure_group()
    order: list[str] = []

    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()
        order.append("loop stopped" if consumer.stopped_event.is_set() else "loop too early")

    async def broken(stop: asyncio.Event) -> None:
        raise RuntimeError("a background loop failed")

    async def closed(name: str) -> None:
        order.append(f"closed {name}")

    process.closing("first", lambda: closed("first"))
    process.closing("second", lambda: closed("second"))
    event = probe(1)
    with structlog.testing.capture_logs() as logs:
        async with process._resources:
            service = asyncio.create_task(
                run_service(
                    process, [consumer], background=[("steady", steady), ("broken", broken)]
                )
            )
            await Publisher(redis).publish(names.stream, event)

            async def handled() -> bool:
                return (await hash_ints(redis, names.key("effects"))).get(event.event_id) == 1

            await eventually(handled, what="the event handled")
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(service, 30)
            order.append("service returned")
    assert order == ["loop stopped", "service returned", "closed second", "closed first"]
    assert any(e["event"] == "background loop failed" and e["loop"] == "broken" for e in logs), logs
