"""Running a service process: discovery by entry point, the process's skeleton, signals, and
the consumers' lifetime.

A service package registers a :class:`ServiceSpec` under the ``cofounder.services`` entry-point
group; the ``cofounder`` CLI discovers it there, so no library imports a service.

Every service's ``main()`` has the same shape, written once here::

    async with service_process(MySettings, service="name") as process:
        engine = process.closing(create_engine(...), engine.dispose)   # its own resources
        await run_service(process, consumers, background=[loop_a, loop_b])

:func:`service_process` reads the settings (one line per problem, exit 2), configures logging
with the secrets scrubbed, switches tracing on when the ``OTEL_*`` variables say so, serves
metrics, connects Redis and checks its durability settings,
and closes what the process opened, in reverse order, at the end. :func:`run_service` runs the
consumers until SIGTERM, with background loops that stop when the consumers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Final, Generic, TypeVar

import structlog
from prometheus_client import start_http_server
from pydantic_settings import BaseSettings
from redis.asyncio import Redis

from cofounder_runtime.connections import connect_redis
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.durability import check_durability
from cofounder_runtime.logs import configure_logging
from cofounder_runtime.secrets import secret_values
from cofounder_runtime.settings import RuntimeSettings, load_settings
from cofounder_runtime.tracing import setup_tracing

__all__ = [
    "SERVICE_ENTRY_POINTS",
    "ServiceProcess",
    "ServiceSpec",
    "discover_services",
    "load_service",
    "run_consumers",
    "run_service",
    "service_names",
    "service_process",
    "start_metrics_server",
]

S = TypeVar("S", bound=RuntimeSettings)
T = TypeVar("T")
#: A background loop: runs until the event is set (the consumers are stopping), then returns.
Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

#: The entry-point group service packages register under.
SERVICE_ENTRY_POINTS: Final = "cofounder.services"

_log = structlog.get_logger("cofounder.service")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSpec:
    """What the CLI needs to know to run a service.

    ``main`` builds the service from its settings and runs it until SIGTERM. ``None`` means the
    service is declared but not built yet; ``status`` then says where its work is tracked.
    """

    name: str
    summary: str
    main: Callable[[], Awaitable[None]] | None = None
    status: str = "ready"
    #: The service's settings class (environment variables), for the configuration reference.
    settings: type[BaseSettings] | None = None


def discover_services() -> dict[str, ServiceSpec]:
    """Every registered service by name. Raises ``TypeError`` on a malformed registration."""
    found: dict[str, ServiceSpec] = {}
    for ep in entry_points(group=SERVICE_ENTRY_POINTS):
        spec = ep.load()
        if not isinstance(spec, ServiceSpec):
            raise TypeError(f"entry point {ep.name!r} ({ep.value}) is not a ServiceSpec")
        found[spec.name] = spec
    return dict(sorted(found.items()))


def load_service(name: str) -> ServiceSpec | None:
    """The service registered under the entry-point name ``name``, loading only its package
    (:func:`discover_services` loads every service's); None when none is. Raises ``TypeError``
    on a malformed registration."""
    for ep in entry_points(group=SERVICE_ENTRY_POINTS, name=name):
        spec = ep.load()
        if not isinstance(spec, ServiceSpec):
            raise TypeError(f"entry point {ep.name!r} ({ep.value}) is not a ServiceSpec")
        return spec
    return None


def service_names() -> list[str]:
    """The registered services' names, without loading any (entry-point metadata only)."""
    return sorted(ep.name for ep in entry_points(group=SERVICE_ENTRY_POINTS))


def start_metrics_server(port: int, *, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped
    """Serve Prometheus ``/metrics`` on ``port`` from a daemon thread (the exporter's own)."""
    start_http_server(port, addr=host)
    _log.info("metrics served", port=port, path="/metrics")


async def run_consumers(consumers: Sequence[Consumer]) -> None:
    """Run consumers until SIGTERM or SIGINT, then stop them gracefully and return.

    Graceful means: no more reads; in-flight handlers finish (within each consumer's grace) and
    are acked; entries waiting for a retry stay pending for the next process.
    """
    loop = asyncio.get_running_loop()

    def stop(signame: str) -> None:
        _log.info("stopping", signal=signame)
        for consumer in consumers:
            consumer.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    try:
        runs = [asyncio.create_task(c.run(), name=f"consumer:{c.stream}") for c in consumers]
        try:
            await asyncio.gather(*runs)
        except BaseException:
            for consumer in consumers:
                consumer.stop()
            await asyncio.gather(*runs, return_exceptions=True)
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@dataclass(slots=True)
class ServiceProcess(Generic[S]):
    """What every service process has: its settings, its Redis client, the event its background
    loops stop on, and the resources it closes at the end (:meth:`closing`)."""

    settings: S
    redis: Redis
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _resources: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    def closing(self, resource: T, close: Callable[[], Awaitable[object]]) -> T:
        """``resource``, closed with ``close()`` when the process ends (the last opened first)."""
        self._resources.push_async_callback(close)
        return resource

    async def enter(self, context: contextlib.AbstractAsyncContextManager[T]) -> T:
        """Enter ``context`` for the rest of the process's life."""
        return await self._resources.enter_async_context(context)


@contextlib.asynccontextmanager
async def service_process(
    settings_type: type[S], *, service: str
) -> AsyncIterator[ServiceProcess[S]]:
    """The skeleton of a service's ``main()`` (see the module docstring)."""
    settings = load_settings(settings_type, service=service)
    configure_logging(
        level=settings.log_level, json=settings.log_json, secrets=secret_values(settings)
    )
    setup_tracing(service)  # the OTEL_* variables; off (nothing installed) by default
    if settings.metrics_port is not None:
        start_metrics_server(settings.metrics_port)
    redis = connect_redis(
        settings.redis_url.get_secret_value(), longest_block_ms=settings.consumer_block_ms
    )
    process = ServiceProcess(settings=settings, redis=redis)
    async with process._resources:
        process.closing(redis, redis.aclose)
        await check_durability(redis, service=service)
        yield process


async def run_service(
    process: ServiceProcess[S],
    consumers: Sequence[Consumer],
    *,
    background: Sequence[tuple[str, Background]] = (),
) -> None:
    """Run ``consumers`` until SIGTERM (:func:`run_consumers`) and the ``(name, loop)``
    background loops beside them; the loops are told to stop (``process.stop``) once the
    consumers have stopped, and awaited."""
    tasks = [asyncio.create_task(loop(process.stop), name=name) for name, loop in background]
    try:
        await run_consumers(consumers)
    finally:
        process.stop.set()
        for task, outcome in zip(
            tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True
        ):
            if isinstance(outcome, Exception):
                _log.error("background loop failed", loop=task.get_name(), exc_info=outcome)
