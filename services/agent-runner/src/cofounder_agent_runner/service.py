"""How the ``cofounder`` CLI finds this service (entry point group ``cofounder.services``)."""

from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="agent-runner",
    summary="the TAOR agent loop in a sandbox, checkpoints and crash resume",
    status="not built yet (issue #4)",
)
