"""How the ``cofounder`` CLI finds this service (entry point group ``cofounder.services``)."""

from cofounder_gateway.bootstrap import main
from cofounder_gateway.settings import GatewaySettings
from cofounder_runtime.service import ServiceSpec

SPEC = ServiceSpec(
    name="gateway",
    summary="REST API, outbox relay, build status projection, live events over SSE",
    main=main,
    settings=GatewaySettings,
)
