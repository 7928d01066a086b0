"""How the ``cofounder`` CLI finds this service (entry point group ``cofounder.services``)."""

from cofounder_budget.bootstrap import main
from cofounder_budget.settings import BudgetSettings
from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="budget",
    summary="budget.usage -> daily budgets, the gate, warnings; top-ups, plan changes; wakes",
    main=main,
    settings=BudgetSettings,
)
