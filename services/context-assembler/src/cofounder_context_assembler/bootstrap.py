"""The composition root: settings in, a running consumer out. Nothing connects at import."""

from __future__ import annotations

import functools

from redis.asyncio import Redis

from cofounder_context_assembler.handlers import HANDLERS, Deps
from cofounder_context_assembler.settings import AssemblerSettings
from cofounder_contracts import Event
from cofounder_contracts.streams import BUILD_REQUESTS, CONTEXT_ASSEMBLER
from cofounder_runtime.consumer import Consumer, Handler
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.service import run_service, service_process

__all__ = ["build_consumer", "main"]


def build_consumer(settings: AssemblerSettings, redis: Redis, deps: Deps) -> Consumer:
    """The consumer of ``build.requested`` with the handlers bound to ``deps``."""
    handlers: dict[type[Event], Handler] = {
        event_type: functools.partial(handler, deps=deps)
        for event_type, handler in HANDLERS.items()
    }
    return Consumer.for_stream(
        redis,
        BUILD_REQUESTS,
        group=CONTEXT_ASSEMBLER,
        consumer=settings.consumer_name,
        handlers=handlers,
        options=settings.consumer_options(),
    )


async def main() -> None:
    """Run the context assembler until SIGTERM."""
    async with service_process(AssemblerSettings, service="context-assembler") as process:
        settings, redis = process.settings, process.redis
        engine = settings.create_engine()
        process.closing(engine, engine.dispose)
        deps = Deps(engine=engine, events=Publisher(redis))
        await run_service(process, [build_consumer(settings, redis, deps)])
