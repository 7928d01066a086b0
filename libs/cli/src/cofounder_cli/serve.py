"""``cofounder serve <service>``: run one service, found through its entry point."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cofounder_runtime.service import ServiceSpec


def discover_services() -> dict[str, ServiceSpec]:
    """Every registered service by name (``cofounder_runtime.service.discover_services``):
    loading them imports every service's package, so only ``serve`` itself does it."""
    from cofounder_runtime.service import discover_services as discover

    return discover()


def serve(
    service: Annotated[
        str | None, typer.Argument(metavar="[SERVICE]", help="The service to run.")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the registered services.")] = False,
) -> None:
    """Run one service until SIGTERM (graceful: in-flight work is finished and acked)."""
    if list_ or service is None:
        for each in discover_services().values():
            typer.echo(f"{each.name:<20} {each.status:<28} {each.summary}")
        return
    from cofounder_runtime.service import load_service, service_names

    # Only the named service's package is imported: a service process does not load the code
    # (and the import time, and the memory) of the other four.
    spec = load_service(service)
    if spec is None:
        known = ", ".join(service_names()) or "none"
        typer.echo(f"error: no service named {service!r} (registered: {known})", err=True)
        raise typer.Exit(2)
    if spec.main is None:
        typer.echo(f"error: the {spec.name} service is not built yet ({spec.status})", err=True)
        raise typer.Exit(2)
    main = spec.main
    import structlog
    import uvloop

    from cofounder_runtime.logs import configure_logging

    # Until the service configures logging with its secrets: no locals in any traceback (the
    # default structlog would print rich tracebacks with every frame's variables).
    configure_logging()
    try:
        uvloop.run(_call(main))
    except Exception:  # noqa: BLE001 - logged and turned into the exit status
        # Through the service's logging (its scrubber), never Python's bare traceback print.
        structlog.get_logger("cofounder.serve").exception("service failed", service=spec.name)
        raise typer.Exit(1) from None


async def _call(main: Callable[[], Awaitable[None]]) -> None:
    await main()
