"""How the ``cofounder`` CLI finds this service (entry point group ``cofounder.services``)."""

from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="budget",
    summary="token metering, daily budgets, the gate and the wake daemon",
    status="not built yet (issue #5)",
)
