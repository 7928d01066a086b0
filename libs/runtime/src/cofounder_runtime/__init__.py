"""The shared Redis Streams runtime: publish, consume (at least once, nothing lost), dead-letter,
deduplicate, configure, log and measure. The contract it keeps is the delivery contract of
docs/architecture.md#delivery-contract.
"""

from cofounder_runtime.connections import connect_redis
from cofounder_runtime.consumer import Consumer, Handler
from cofounder_runtime.deadletter import DeadLetter
from cofounder_runtime.idempotency import Applied, RedisOnce
from cofounder_runtime.logs import configure_logging
from cofounder_runtime.options import ConsumerOptions
from cofounder_runtime.publisher import Publisher
from cofounder_runtime.service import ServiceSpec, discover_services, run_consumers
from cofounder_runtime.settings import RuntimeSettings

__all__ = [
    "Applied",
    "Consumer",
    "ConsumerOptions",
    "DeadLetter",
    "Handler",
    "Publisher",
    "RedisOnce",
    "RuntimeSettings",
    "ServiceSpec",
    "configure_logging",
    "connect_redis",
    "discover_services",
    "run_consumers",
]
