"""Money as the CLI prints it: the API counts integer micros of the plan's currency."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["MICROS", "money"]

MICROS = Decimal(1_000_000)


def money(micros: int) -> str:
    """Micros as currency units: four decimals below one unit, two above."""
    units = Decimal(micros) / MICROS
    return f"{units:,.4f}" if units < 1 else f"{units:,.2f}"
