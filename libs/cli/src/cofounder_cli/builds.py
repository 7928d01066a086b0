"""``cofounder builds create|get|list|follow|cancel|logs``: a founder's builds, on the REST API
(through ``cofounder_client``).

Human-readable output by default, ``--json`` for scripts. The token comes from ``--token`` or
``$COFOUNDER_TOKEN`` (``cofounder seed demo --export`` sets it); the gateway from
``--gateway-url`` or ``$COFOUNDER_GATEWAY_URL``. Errors: ``api.py`` (a line on stderr, or a
JSON problem object with ``--json``; exit 1). ``follow`` exits 0 when the build completes and 1
when it fails or is cancelled.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from cofounder_cli.api import Gateway, founder_command

if TYPE_CHECKING:
    from cofounder_client import Build, BuildStatus, CofounderClient

    Founder = Gateway[CofounderClient]

# cofounder_client (httpx: a quarter of a second to import) is imported by the commands that
# call the gateway, not here: --help never needs it.

__all__ = ["app"]

app = typer.Typer(
    help="Start, read, follow and cancel builds (the gateway's REST API).", no_args_is_help=True
)

BuildArg = Annotated[str, typer.Argument(metavar="BUILD_ID", help="The build's id.")]


def _show(build: Build) -> str:
    lines = [
        f"build    {build.id}",
        f"project  {build.project_id}",
        f"status   {build.status}",
        f"goal     {build.goal}",
        f"progress {build.iterations} iterations, {build.tool_calls} tool calls, "
        f"{build.input_tokens:,} tokens in / {build.output_tokens:,} out",
    ]
    if build.build_version is not None:
        lines.append(f"version  {build.build_version}")
    if build.preview_url:
        lines.append(f"preview  {build.preview_url}")
    if build.error:
        lines.append(f"error    {build.error}")
    return "\n".join(lines)


@founder_command(app)
def create(
    gw: Founder,
    project: Annotated[
        str, typer.Option("--project", metavar="PROJECT_ID", help="The project to build.")
    ],
    goal: Annotated[
        str | None, typer.Option(metavar="TEXT", help="What to build (default: the MVP).")
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(metavar="KEY", help="Retry-safe: the same key returns the same build."),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Then follow its events.")] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print only the build's id: BUILD=$(cofounder builds create ...)"
        ),
    ] = False,
) -> None:
    """Start a build of the project (queued at once; the pipeline takes it from there)."""
    build = gw.client.start_build(project, goal=goal, idempotency_key=idempotency_key)
    if quiet and not gw.as_json:
        typer.echo(build.id)
    else:
        gw.emit(build.raw, f"build {build.id} {build.status}")
    if follow:
        _follow(gw, build.id)


@founder_command(app)
def get(gw: Founder, build_id: BuildArg) -> None:
    """One build: status, progress, version, preview URL, error."""
    build = gw.client.get_build(build_id)
    gw.emit(build.raw, _show(build))


@founder_command(app, with_json=False)
def logs(
    gw: Founder,
    build_id: BuildArg,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Write the archive as it is stored (gzip JSON Lines) to FILE; default: its "
            "lines, uncompressed, on stdout.",
        ),
    ] = None,
) -> None:
    """A finished build's log archive: every event of its feed, one JSON object a line."""
    data = gw.client.get_build_log(build_id)
    if out is not None:
        out.write_bytes(data)
        typer.echo(f"{out}: {len(data):,} bytes", err=True)
        return
    sys.stdout.buffer.write(gzip.decompress(data))
    sys.stdout.flush()


@founder_command(app, "list")
def list_(
    gw: Founder,
    status: Annotated[
        str | None, typer.Option(metavar="STATUS", help="Only builds in this status.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100, metavar="N", help="Builds per page (1 to 100).")
    ] = 20,
    cursor: Annotated[
        str | None, typer.Option(metavar="CURSOR", help="The next page's cursor.")
    ] = None,
) -> None:
    """Your builds, newest first (--cursor for the next page)."""
    page = gw.client.list_builds(
        status=cast("BuildStatus | None", status), limit=limit, cursor=cursor
    )
    rows = [
        f"{b.id}  {b.status:<10} v{b.build_version or '-':<3} {b.preview_url or ''}"
        for b in page.items
    ]
    if page.next_cursor:
        rows.append(f"(more: --cursor {page.next_cursor})")
    gw.emit(page.raw, "\n".join(rows) or "no builds")


def _follow(gw: Founder, build_id: str) -> None:
    from cofounder_cli.progress import follow as follow_events
    from cofounder_cli.progress import succeeded

    printed = (
        (lambda kind, data: typer.echo(json.dumps({"event": kind, **data}))) if gw.as_json else None
    )
    end: dict[str, Any] = follow_events(gw.client, build_id, on_event=printed)
    if not succeeded(end):
        raise typer.Exit(1)
    if not gw.as_json and end.get("preview_url"):
        typer.echo(f"preview: {end['preview_url']}")


@founder_command(app, "follow")
def follow_(gw: Founder, build_id: BuildArg) -> None:
    """Print the build's events live, from its start, until it ends (exit 1 unless completed)."""
    _follow(gw, build_id)


@founder_command(app)
def cancel(gw: Founder, build_id: BuildArg) -> None:
    """Cancel the build (the agent stops before its next step)."""
    build = gw.client.cancel_build(build_id)
    gw.emit(build.raw, f"build {build.id} {build.status}")
