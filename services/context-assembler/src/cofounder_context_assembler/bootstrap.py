"""The composition root: settings in, a running consumer out. Nothing connects at import."""

from __future__ import annotations

import functools

from redis.asyncio import Redis

from cofounder_context_assembler.handlers import HANDLERS, Deps
from cofounder_context_assembler.settings import AssemblerSettings
from cofounder_contracts import Event
from cofounder_contracts.streams import BUILD_REQUESTS, CONTEXT_ASSEMBLER
from cofounder_db.engine import create_engine
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.consumer import Consumer, Handler
from cofounder_runtime.durability import check_durability
from cofounder_runtime.logs import configure_logging
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.secrets import secret_values
from cofounder_runtime.service import run_consumers, start_metrics_server
from cofounder_runtime.settings import load_settings

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
    settings = load_settings(AssemblerSettings, service="context-assembler")
    configure_logging(
        level=settings.log_level, json=settings.log_json, secrets=secret_values(settings)
    )
    if settings.metrics_port is not None:
        start_metrics_server(settings.metrics_port)
    redis = connect_redis(
        settings.redis_url.get_secret_value(), longest_block_ms=settings.consumer_block_ms
    )
    await check_durability(redis, service="context-assembler")
    engine = create_engine(
        settings.database_url.get_secret_value(), pool_size=settings.database_pool_size
    )
    deps = Deps(engine=engine, events=Publisher(redis))
    try:
        await run_consumers([build_consumer(settings, redis, deps)])
    finally:
        await engine.dispose()
        await redis.aclose()
