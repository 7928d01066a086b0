"""The FastAPI application: versioned routes under ``/v1`` (``routes/``), problem+json errors,
metrics."""

from __future__ import annotations

from fastapi import FastAPI

from cofounder_gateway.deps import Gateway
from cofounder_gateway.docs import docs_router
from cofounder_gateway.limits import BodyLimit
from cofounder_gateway.problems import CatchCrashes, install
from cofounder_gateway.routes import admin, builds, events, health, metrics, usage

__all__ = ["Gateway", "create_app"]

#: The routers under ``/v1``, in the order the OpenAPI document lists their paths.
_V1_ROUTERS = (
    builds.router,
    events.router,
    health.router,
    admin.router,
    usage.router,
    usage.admin_router,
)


def create_app(gw: Gateway) -> FastAPI:
    """The application for ``gw`` (no I/O here: connections are the caller's). The routes reach
    ``gw`` through ``app.state`` (``deps.py``)."""
    app = FastAPI(
        # Metrics are Prometheus (/metrics); FastAPI's OpenTelemetry hooks would cost a provider
        # lookup per request for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Cofounder build pipeline",
        version="1.0.0",
        description="Start builds, follow them live, cancel them.",
        # The documentation pages load their scripts from this server, not a CDN (docs.py).
        docs_url=None,
        redoc_url=None,
    )
    install(app)
    app.include_router(docs_router(app))
    app.state.gw = gw
    for router in _V1_ROUTERS:
        # Each straight under the app: a router included in another is one more level to
        # match on every request.
        app.include_router(router, prefix="/v1")
    app.include_router(metrics.router)
    app.add_middleware(BodyLimit, max_bytes=gw.settings.max_body_bytes)
    app.add_middleware(CatchCrashes)  # outermost of ours: catches what BodyLimit raises too
    return app
