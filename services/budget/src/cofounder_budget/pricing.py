"""What tokens cost, per model, in integer nano-units of the plan's currency per token (so a
price like $3.75 per million tokens is exact: 3,750 nano per token). Spend is kept in micros.

Defaults are list prices per million tokens (input / output; cache writes at 1.25x input, cache
reads at 0.1x input). A model missing from the table is priced as the dearest one known (never
undercount) and logged once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import structlog

from cofounder_contracts import BudgetUsage

__all__ = ["DEFAULT_PRICES", "Price", "Pricing"]

_log = structlog.get_logger("cofounder.budgets.pricing")


@dataclass(frozen=True, slots=True)
class Price:
    """Nano-units per token."""

    input: int
    output: int
    cache_write: int
    cache_read: int

    @classmethod
    def per_million(cls, input_: float, output: float) -> Price:
        """From dollars per million tokens, caches derived from the input price."""
        return cls(
            input=round(input_ * 1000),
            output=round(output * 1000),
            cache_write=round(input_ * 1250),
            cache_read=round(input_ * 100),
        )


DEFAULT_PRICES: Final[Mapping[str, Price]] = {
    "claude-opus-5-5": Price.per_million(5, 25),
    "claude-sonnet-5-5": Price.per_million(3, 15),
    "claude-haiku-5-5": Price.per_million(1, 5),
}


class Pricing:
    def __init__(self, prices: Mapping[str, Price] = DEFAULT_PRICES) -> None:
        if not prices:
            raise ValueError("pricing needs at least one model")
        self._prices = dict(prices)
        self._dearest = max(prices.values(), key=lambda p: (p.output, p.input))
        self._unknown_logged: set[str] = set()

    def price(self, model: str) -> Price:
        found = self._prices.get(model)
        if found is None:
            if model not in self._unknown_logged:
                self._unknown_logged.add(model)
                _log.warning("no price for this model; charging the dearest known", model=model)
            return self._dearest
        return found

    def cost_micros(self, usage: BudgetUsage) -> int:
        """The call's cost in micros, rounded up (never undercount)."""
        p = self.price(usage.model)
        nano = (
            usage.input_tokens * p.input
            + usage.output_tokens * p.output
            + usage.cache_creation_input_tokens * p.cache_write
            + usage.cache_read_input_tokens * p.cache_read
        )
        return -(-nano // 1000)
