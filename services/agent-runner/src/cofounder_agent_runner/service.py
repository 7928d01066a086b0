"""Registration of the agent-runner service with the ``cofounder`` CLI (entry point ``cofounder.services``)."""

from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="agent-runner",
    summary="the TAOR agent loop in a sandbox, checkpoints and crash resume",
    status="not built yet (issue #4)",
)
