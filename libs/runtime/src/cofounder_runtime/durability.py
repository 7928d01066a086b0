"""What the pipeline expects of Redis, checked once when a service starts.

PostgreSQL is the system of record; Redis holds the streams between services, the budget
counters and the build feeds. The deploy expects of it (see docs/runbook.md#redis-lost-data):

- persistence: AOF with ``appendfsync everysec`` (at most a second of writes lost) or
  ``always``, or a managed service's equivalent;
- ``maxmemory-policy noeviction``: a full Redis refuses writes (the services retry) rather than
  evicting a key, which may be a stream and every entry in it;
- replication with failover, for availability.

:func:`check_durability` reads the first two (``CONFIG GET``, one round trip) and logs one
warning per problem. Replication is not checked: a replica's presence says nothing of whether
failover is set up. A server that refuses ``CONFIG`` (a managed Redis, an ACL user without
``+config``, as the deploy's service users are) cannot be checked: one info line says so. The
check never raises: a service that cannot check still starts.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import structlog
from redis.asyncio import Redis

__all__ = ["check_durability", "problems_of"]

#: Where the runbook says what to do when Redis lost data.
_RUNBOOK: Final = "see docs/runbook.md#redis-lost-data"
#: How long the check may take: a server that does not answer must not hold a service's start.
_TIMEOUT_S: Final = 5.0
_SETTINGS: Final = ("appendonly", "appendfsync", "maxmemory-policy")


def problems_of(config: dict[str, str]) -> list[str]:
    """The durability problems of a Redis with ``config`` (setting name to value), one sentence
    each. ``appendfsync`` matters only with AOF on, so it is judged only then; a setting the
    server does not report (a Redis-compatible server without it) is not judged."""
    found: list[str] = []
    aof, fsync = config.get("appendonly"), config.get("appendfsync")
    policy = config.get("maxmemory-policy")
    if aof is not None and aof.lower() != "yes":
        found.append(
            "Redis has no AOF: a restart loses the last writes (streams, budget counters, build "
            f"feeds); start it with --appendonly yes --appendfsync everysec; {_RUNBOOK}"
        )
    elif fsync is not None and fsync.lower() == "no":
        found.append(
            "Redis's AOF is fsynced only when the OS decides (appendfsync no): a crash of the "
            f"machine loses up to 30 s of writes; use --appendfsync everysec; {_RUNBOOK}"
        )
    if policy is not None and policy.lower() != "noeviction":
        found.append(
            f"Redis may evict keys when full (maxmemory-policy {policy}): an eviction can drop "
            "a whole stream; use --maxmemory-policy noeviction (writes then fail and are "
            f"retried); {_RUNBOOK}"
        )
    return found


async def _read_config(redis: Redis) -> dict[str, str]:
    """The three settings, read in one pipeline (one ``CONFIG GET`` each: Redis before 7 takes
    a single pattern)."""
    pipe = redis.pipeline(transaction=False)
    for name in _SETTINGS:
        pipe.config_get(name)
    replies: list[Any] = await pipe.execute(raise_on_error=False)
    config: dict[str, str] = {}
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply  # the server's own words, not the pipeline's wrapping of them
        for key, value in (reply or {}).items():
            config[_text(key)] = _text(value)
    return config


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def check_durability(redis: Redis, *, service: str) -> list[str]:
    """Check that ``redis`` keeps what it is given (see the module docstring); log one warning
    per problem and return them (empty when all is well or when it cannot be checked).

    Call it once, after connecting, when a service starts. It never raises."""
    # A logger per call (the check runs once): a module-level one is cached at its first use
    # with the logging configuration then in force.
    log = structlog.get_logger("cofounder.runtime.durability").bind(service=service)
    try:
        async with asyncio.timeout(_TIMEOUT_S):
            config = await _read_config(redis)
    except Exception as exc:  # noqa: BLE001 - a failed check must not stop the service
        log.info(f"durability settings cannot be checked: {str(exc) or type(exc).__name__}")
        return []
    found = problems_of(config)
    for problem in found:
        log.warning(problem)
    return found
