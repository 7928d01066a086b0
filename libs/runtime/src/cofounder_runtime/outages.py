"""Which handler failures are an outage of a server the handler needs, not the event's fault.

A PostgreSQL restart or failover takes seconds; so does a Redis one. A handler that fails for
that says nothing about its event, and the consumer's few quick retries (``max_deliveries``,
about a second and a half with the default backoff) would dead-letter every event handled in
those seconds. The consumer waits such failures out instead, without counting them as
deliveries, for ``outage_patience_ms`` (see :mod:`cofounder_runtime.consumer`).

An outage is a refused, reset, dropped or timed-out connection (a statement past its timeout
included: the server that stopped answering in a failover looks like that), or a server saying it
is starting, stopping or out of connection slots: the exception itself, its explicit cause
(``raise ... from``), or the driver error SQLAlchemy wraps. An error merely raised while
handling one (``__context__``) is not: the handler chose to fail for another reason.
"""

from __future__ import annotations

import socket
from typing import Final

import asyncpg.exceptions as pg
import redis.exceptions as redis_errors
from sqlalchemy.exc import DBAPIError

__all__ = ["is_outage"]

_OUTAGES: Final[tuple[type[BaseException], ...]] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    TimeoutError,  # asyncio's too
    socket.gaierror,  # the server's name does not resolve (a DNS blip in a failover)
    redis_errors.ConnectionError,  # BusyLoadingError among them: a Redis loading its data
    redis_errors.TimeoutError,
    pg.PostgresConnectionError,  # the connection failed or is gone
    pg.CannotConnectNowError,  # starting up, or in recovery
    pg.AdminShutdownError,  # shutting down (a restart, a failover)
    pg.CrashShutdownError,
    pg.TooManyConnectionsError,
)


#: Of the connection errors, the one that is the client's fault (a statement sent wrong): a bug.
_NOT_OUTAGES: Final[tuple[type[BaseException], ...]] = (pg.ProtocolViolationError,)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what explicitly caused it) says a server did not answer."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _NOT_OUTAGES):
            return False
        if isinstance(current, _OUTAGES):
            return True
        if isinstance(current, DBAPIError):
            if current.connection_invalidated:
                return True
            orig = current.orig
            current = orig if isinstance(orig, BaseException) else current.__cause__
        else:
            current = current.__cause__
    return False
