"""A consumer process for end-to-end delivery tests: ``python -m cofounder_testing.worker``.

It consumes :class:`~cofounder_testing.probe.Probe` events with the real runtime and exits 0 after
a graceful stop (SIGTERM). Tests SIGKILL it, restart it under the same name, and so on.
"""

from __future__ import annotations

import argparse

import uvloop

from cofounder_runtime.connections import connect_redis
from cofounder_runtime.consumer import Consumer
from cofounder_runtime.logs import configure_logging
from cofounder_runtime.options import ConsumerOptions
from cofounder_runtime.service import run_consumers, start_metrics_server
from cofounder_testing.probe import Probe, ProbeHandler


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--prefix", required=True, help="key prefix of the probe's records")
    p.add_argument("--min-idle-ms", type=int, default=1_000)
    p.add_argument("--heartbeat-ms", type=int, default=None)
    p.add_argument("--janitor-ms", type=int, default=300)
    p.add_argument("--max-deliveries", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--grace-s", type=float, default=30.0)
    p.add_argument("--metrics-port", type=int, default=None)
    return p.parse_args()


async def _main(args: argparse.Namespace) -> None:
    if args.metrics_port is not None:
        start_metrics_server(args.metrics_port, host="127.0.0.1")
    redis = connect_redis(args.redis_url)
    options = ConsumerOptions(
        concurrency=args.concurrency,
        min_idle_ms=args.min_idle_ms,
        heartbeat_ms=args.heartbeat_ms,
        janitor_interval_ms=args.janitor_ms,
        max_deliveries=args.max_deliveries,
        retry_base_ms=20,
        retry_max_ms=min(200, args.min_idle_ms - 1),
        block_ms=200,
        shutdown_grace_s=args.grace_s,
    )
    consumer = Consumer(
        redis,
        stream=args.stream,
        group=args.group,
        consumer=args.name,
        handlers={Probe: ProbeHandler(redis, args.prefix)},
        options=options,
    )
    await consumer.ensure_group()
    await redis.sadd(f"{args.prefix}:ready", args.name)
    try:
        await run_consumers([consumer])
    finally:
        await redis.aclose()


def main() -> None:
    """Run the worker until SIGTERM."""
    configure_logging(level="INFO", json=True)
    uvloop.run(_main(_parse()))


if __name__ == "__main__":
    main()
