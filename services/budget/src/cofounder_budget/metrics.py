"""Prometheus metrics of the budget service. Names are part of the operations contract."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

__all__ = ["EXHAUSTED", "SLEEPING", "SPEND", "TOPUPS", "WAKES"]

SPEND: Final = Counter(
    "cofounder_budget_spend_micros_total",
    "Metered spend in micros of the currency, by tier.",
    ["tier"],
)
EXHAUSTED: Final = Counter(
    "cofounder_budget_exhausted_total", "Users whose daily budget was spent (once a user a day)."
)
SLEEPING: Final = Gauge(
    "cofounder_budget_sleeping_builds", "Builds asleep until their budget resets (last look)."
)
WAKES: Final = Counter(
    "cofounder_budget_wakes_total",
    "Sleeping builds woken by this process, by reason (rollover, top_up, tier_change).",
    ["reason"],
)
TOPUPS: Final = Counter("cofounder_budget_topups_micros_total", "Top-ups recorded, in micros.")
