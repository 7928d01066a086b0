"""The composition root: the HTTP API, the outbox relay and the projection consumers in one
process. SIGTERM: stop accepting requests, finish in-flight ones, stop the consumers gracefully
(in-flight events acked), let the relay finish its batch, exit 0."""

from __future__ import annotations

import asyncio
import functools
import secrets
import signal

import asyncpg
import structlog
import uvicorn
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_contracts import Event
from cofounder_contracts.streams import BUDGET_SIGNALS, BUDGET_USAGE, BUILD_EVENTS, GATEWAY
from cofounder_db.engine import driver_dsn
from cofounder_gateway.app import Gateway, create_app
from cofounder_gateway.archive import Archives
from cofounder_gateway.builds_pg import create_write_pool
from cofounder_gateway.feed import SSE_BLOCK_MS, Feed
from cofounder_gateway.outbox import Relay
from cofounder_gateway.projection import (
    BUILD_EVENT_HANDLERS,
    SIGNAL_HANDLERS,
    USAGE_HANDLERS,
    ProjectionDeps,
)
from cofounder_gateway.reconcile.reconciler import Reconciler
from cofounder_gateway.settings import GatewaySettings
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.consumer import Consumer, Handler
from cofounder_runtime.service import ServiceProcess, service_process

__all__ = ["assemble", "consumers", "main"]

_log = structlog.get_logger("cofounder.gateway")


def consumers(settings: GatewaySettings, gw: Gateway) -> list[Consumer]:
    """The projection consumers (build events, usage, budget signals) bound to the gateway's
    dependencies."""
    deps = ProjectionDeps(engine=gw.engine, feed=gw.feed)
    out = []
    tables = (
        (BUILD_EVENTS, BUILD_EVENT_HANDLERS),
        (BUDGET_USAGE, USAGE_HANDLERS),
        (BUDGET_SIGNALS, SIGNAL_HANDLERS),
    )
    for stream, table in tables:
        handlers: dict[type[Event], Handler] = {
            t: functools.partial(h, deps=deps) for t, h in table.items()
        }
        out.append(
            Consumer.for_stream(
                gw.redis,
                stream,
                group=GATEWAY,
                consumer=settings.consumer_name,
                handlers=handlers,
                options=settings.consumer_options(),
            )
        )
    return out


def assemble(
    settings: GatewaySettings,
    engine: AsyncEngine,
    redis: Redis,
    pg_pool: asyncpg.Pool,
    *,
    relay_idle_s: float,
) -> Gateway:
    """The gateway's parts on open connections: the live feed (with a reader pool of its own
    for the SSE streams' long blocking reads) and the outbox relay."""
    return Gateway(
        settings=settings,
        engine=engine,
        redis=redis,
        feed=Feed(
            redis,
            max_len=settings.build_feed_max_len,
            ttl_after_end_s=settings.feed_ttl_after_end_s,
            idle_ttl_s=settings.feed_idle_ttl_s,
            reader=connect_redis(
                settings.redis_url.get_secret_value(),
                max_connections=settings.sse_max_connections,
                longest_block_ms=SSE_BLOCK_MS,
            ),
            max_streams=settings.sse_max_connections,
            max_streams_per_user=settings.sse_max_streams_per_user,
        ),
        relay=Relay(engine, redis, idle_s=relay_idle_s),
        pg_pool=pg_pool,
        archives=Archives(settings),
    )


async def main() -> None:
    """Run the gateway until SIGTERM."""
    async with service_process(GatewaySettings, service="gateway") as process:
        await _serve(process)


async def _serve(process: ServiceProcess[GatewaySettings]) -> None:
    """The API, the projection's consumers and the background roles, until SIGTERM. Unlike the
    other services it has an HTTP server to stop with the consumers, so it handles the signals
    itself (:func:`run_service` is for consumer-only processes)."""
    settings, redis = process.settings, process.redis
    engine = settings.create_engine()
    process.closing(engine, engine.dispose)
    pg_pool = await create_write_pool(driver_dsn(engine), size=settings.write_pool_size)
    process.closing(pg_pool, pg_pool.close)
    gw = assemble(settings, engine, redis, pg_pool, relay_idle_s=settings.outbox_poll_ms / 1000)
    process.closing(gw.feed, gw.feed.close)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(gw),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    stop = process.stop
    workers = consumers(settings, gw) if settings.run_projection else []

    def on_signal() -> None:
        stop.set()
        server.should_exit = True
        for consumer in workers:
            consumer.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    tasks = [asyncio.create_task(c.run(), name=f"consumer:{c.stream}") for c in workers]
    if settings.run_relay:
        tasks.append(asyncio.create_task(gw.relay.run(stop), name="outbox-relay"))
    if settings.run_reconciler:
        reconciler = Reconciler(
            engine,
            redis,
            config=settings.reconciler_config(),
            owner=f"{settings.consumer_name}:{secrets.token_hex(4)}",  # unique per process
        )
        tasks.append(asyncio.create_task(reconciler.run(stop), name="reconciler"))
    if settings.run_projection:  # the projection writes processed_events: it prunes them too
        pruner = settings.processed_events_pruner(engine)
        tasks.append(asyncio.create_task(pruner.run(stop), name="processed-events-retention"))
    _log.info(
        "gateway started",
        api=settings.serve_api,
        relay=settings.run_relay,
        projection=settings.run_projection,
        reconciler=settings.run_reconciler,
        host=settings.host,
        port=settings.port,
    )
    try:
        if settings.serve_api:
            await server.serve()
        else:
            await stop.wait()
    finally:
        on_signal()
        await asyncio.gather(*tasks, return_exceptions=True)
        _log.info("gateway stopped")
