"""Registration of the budget service with the ``cofounder`` CLI (entry point ``cofounder.services``)."""

from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="budget",
    summary="token metering, daily budgets, the gate and the wake daemon",
    status="not built yet (issue #5)",
)
