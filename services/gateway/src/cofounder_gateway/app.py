"""The FastAPI application: versioned routes under ``/v1`` (``routes/``), problem+json errors,
metrics."""

from __future__ import annotations

from fastapi import FastAPI

from cofounder_gateway.access import AccessLog
from cofounder_gateway.deps import Gateway
from cofounder_gateway.docs import TAGS, docs_router, operation_id
from cofounder_gateway.limits import BodyLimit
from cofounder_gateway.problems import CatchCrashes, install
from cofounder_gateway.routes import (
    admin,
    admin_builds,
    browser_auth,
    builds,
    events,
    health,
    metrics,
    page,
    screenshots,
    usage,
)
from cofounder_gateway.telemetry import telemetry

__all__ = ["Gateway", "create_app"]

#: The routers under ``/v1``, in the order the OpenAPI document lists their paths.
_V1_ROUTERS = (
    builds.router,
    events.router,
    screenshots.router,
    health.router,
    admin.router,
    usage.router,
    usage.admin_router,
    browser_auth.router,
    admin_builds.router,
)


def create_app(gw: Gateway) -> FastAPI:
    """The application for ``gw`` (no I/O here: connections are the caller's). The routes reach
    ``gw`` through ``app.state`` (``deps.py``)."""
    app = FastAPI(
        # Request spans when tracing is on (telemetry.py); metrics are Prometheus (/metrics).
        telemetry=telemetry(),
        title="Cofounder build pipeline",
        version="1.0.0",
        description="Start builds, follow them live, cancel them. Errors are "
        "application/problem+json (RFC 9457) with a stable `type` to branch on.",
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
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
    app.include_router(page.router)  # the build page, /app (no build step, no CDN)
    app.add_middleware(BodyLimit, max_bytes=gw.settings.max_body_bytes)
    app.add_middleware(CatchCrashes)  # catches what BodyLimit raises too
    app.add_middleware(AccessLog)  # outermost of ours: logs and counts CatchCrashes's 500s
    return app
