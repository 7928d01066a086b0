"""Settings every service shares, read from the environment when (and only when) constructed.

Each service subclasses :class:`RuntimeSettings` with its own fields; its composition root builds
one instance and passes it down. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cofounder_runtime.options import ConsumerOptions

__all__ = ["RuntimeSettings", "default_consumer_name"]


def default_consumer_name() -> str:
    """``<host>-<pid>``: unique per process, stable for its life (Kubernetes pod names are hosts).

    Set ``CONSUMER_NAME`` to a stable name (a StatefulSet ordinal) to have a restarted process
    re-read its own pending entries at once instead of waiting for another's janitor.
    """
    return f"{socket.gethostname()}-{os.getpid()}"


class RuntimeSettings(BaseSettings):
    """Redis, consumer behaviour, logs and metrics. Environment variables are upper-case names."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis (or Valkey) URL.")
    consumer_name: str = Field(
        default_factory=default_consumer_name,
        description="This process's name in its consumer groups.",
    )
    consumer_concurrency: int = Field(
        default=256, description="Handlers running at once per stream."
    )
    consumer_batch_size: int = Field(default=256, description="XREADGROUP COUNT.")
    consumer_block_ms: int = Field(default=1_000, description="XREADGROUP BLOCK.")
    consumer_min_idle_ms: int = Field(
        default=30_000, description="Idle time after which an entry is claimed."
    )
    consumer_max_deliveries: int = Field(default=5, description="Deliveries before dead-lettering.")
    consumer_retry_base_ms: int = Field(default=100, description="First retry backoff.")
    consumer_retry_max_ms: int = Field(default=5_000, description="Longest retry backoff.")
    consumer_shutdown_grace_s: float = Field(
        default=30.0, description="Time in-flight work gets on SIGTERM."
    )
    log_level: str = Field(default="INFO", description="Log level name.")
    log_json: bool = Field(default=True, description="JSON logs (false: human-readable console).")
    metrics_port: int | None = Field(
        default=None, description="Serve Prometheus /metrics on this port."
    )

    def consumer_options(self, *, max_age_ms: int | None = None) -> ConsumerOptions:
        """The consumer options these settings describe."""
        return ConsumerOptions(
            concurrency=self.consumer_concurrency,
            batch_size=self.consumer_batch_size,
            block_ms=self.consumer_block_ms,
            min_idle_ms=self.consumer_min_idle_ms,
            max_deliveries=self.consumer_max_deliveries,
            retry_base_ms=self.consumer_retry_base_ms,
            retry_max_ms=self.consumer_retry_max_ms,
            shutdown_grace_s=self.consumer_shutdown_grace_s,
            max_age_ms=max_age_ms,
        )
