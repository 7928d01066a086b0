"""Prometheus metrics of the agent runner. Names are part of the operations contract (dashboards
and alerts use them): rename nothing. Per-iteration work is a few counter increments, nothing per
token."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BUILDS_ACTIVE",
    "BUILDS_ENDED",
    "ITERATIONS",
    "MODEL_CALLS_REPEATED",
    "MODEL_CALL_SECONDS",
    "MODEL_RETRIES",
    "MODEL_TOKENS",
    "TOOL_CALLS",
]

BUILDS_ACTIVE: Final = Gauge(
    "cofounder_runner_builds_active", "Builds this process is driving now."
)
BUILDS_ENDED: Final = Counter(
    "cofounder_runner_drives_total",
    "Drives of a build that ended, by how: settled (completed, failed, cancelled, sleeping, "
    "duplicate, given_up) or handed back (shutdown, model_unavailable, lease_lost, sandbox_gone).",
    ["outcome"],
)
ITERATIONS: Final = Counter("cofounder_runner_iterations_total", "Think-act-observe iterations.")
TOOL_CALLS: Final = Counter(
    "cofounder_runner_tool_calls_total",
    "Tool calls, by tool and outcome (ok, error).",
    ["tool", "outcome"],
)
MODEL_CALL_SECONDS: Final = Histogram(
    "cofounder_runner_model_call_seconds",
    "Model calls that returned a reply (retries included), by model.",
    ["model"],
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
)
MODEL_TOKENS: Final = Counter(
    "cofounder_runner_model_tokens_total",
    "Tokens reported by the API, by model and kind (input, output, cache_write, cache_read).",
    ["model", "kind"],
)
MODEL_RETRIES: Final = Counter(
    "cofounder_runner_model_retries_total",
    "Model attempts that were retried, by reason (rate_limited, overloaded, server_error, "
    "broken_stream), and switches to the fallback model (fallback).",
    ["reason"],
)
MODEL_CALLS_REPEATED: Final = Counter(
    "cofounder_runner_model_calls_repeated_total",
    "Builds resumed mid-run after their runner died: the model call in flight then, if there "
    "was one, is made again (its usage was never published: the founder is charged for the "
    "repeat only).",
)
