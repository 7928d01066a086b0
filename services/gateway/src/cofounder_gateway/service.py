"""How the ``cofounder`` CLI finds this service (entry point group ``cofounder.services``)."""

from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="gateway",
    summary="REST API, outbox relay, build status projection, live events over SSE",
    status="not built yet (issue #3)",
)
