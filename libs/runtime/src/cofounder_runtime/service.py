"""Running a service process: discovery by entry point, signals, and the consumers' lifetime.

A service package registers a :class:`ServiceSpec` under the ``cofounder.services`` entry-point
group; the ``cofounder`` CLI discovers it there, so no library imports a service.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Final

import structlog
from prometheus_client import start_http_server
from pydantic_settings import BaseSettings

from cofounder_runtime.consumer import Consumer

__all__ = [
    "SERVICE_ENTRY_POINTS",
    "ServiceSpec",
    "discover_services",
    "run_consumers",
    "start_metrics_server",
]

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
