"""Registration of the gateway service with the ``cofounder`` CLI (entry point ``cofounder.services``)."""

from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="gateway",
    summary="REST API, outbox relay, build status projection, live events over SSE",
    status="not built yet (issue #3)",
)
