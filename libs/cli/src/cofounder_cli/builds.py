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

from cofounder_cli.api import (
    DEFAULT_GATEWAY,
    GatewayOpt,
    JsonOpt,
    TokenOpt,
    emit,
    founder_client,
    shown_errors,
)

if TYPE_CHECKING:
    from cofounder_client import Build, BuildStatus, CofounderClient

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


@app.command()
def create(
    project: Annotated[
        str, typer.Option("--project", metavar="PROJECT_ID", help="The project to build.")
    ],
    token: TokenOpt,
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
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """Start a build of the project (queued at once; the pipeline takes it from there)."""
    with shown_errors(json_), founder_client(gateway_url, token) as client:
        build = client.start_build(project, goal=goal, idempotency_key=idempotency_key)
        if quiet and not json_:
            typer.echo(build.id)
        else:
            emit(build.raw, json_, f"build {build.id} {build.status}")
        if follow:
            _follow(client, build.id, json_)


@app.command()
def get(
    build_id: BuildArg,
    token: TokenOpt,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """One build: status, progress, version, preview URL, error."""
    with shown_errors(json_), founder_client(gateway_url, token) as client:
        build = client.get_build(build_id)
    emit(build.raw, json_, _show(build))


@app.command()
def logs(
    build_id: BuildArg,
    token: TokenOpt,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Write the archive as it is stored (gzip JSON Lines) to FILE; default: its "
            "lines, uncompressed, on stdout.",
        ),
    ] = None,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
) -> None:
    """A finished build's log archive: every event of its feed, one JSON object a line."""
    with shown_errors(False), founder_client(gateway_url, token) as client:
        data = client.get_build_log(build_id)
    if out is not None:
        out.write_bytes(data)
        typer.echo(f"{out}: {len(data):,} bytes", err=True)
        return
    sys.stdout.buffer.write(gzip.decompress(data))
    sys.stdout.flush()


@app.command("list")
def list_(
    token: TokenOpt,
    status: Annotated[
        str | None, typer.Option(metavar="STATUS", help="Only builds in this status.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100, metavar="N", help="Builds per page (1 to 100).")
    ] = 20,
    cursor: Annotated[
        str | None, typer.Option(metavar="CURSOR", help="The next page's cursor.")
    ] = None,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """Your builds, newest first (--cursor for the next page)."""
    with shown_errors(json_), founder_client(gateway_url, token) as client:
        page = client.list_builds(
            status=cast("BuildStatus | None", status), limit=limit, cursor=cursor
        )
    rows = [
        f"{b.id}  {b.status:<10} v{b.build_version or '-':<3} {b.preview_url or ''}"
        for b in page.items
    ]
    if page.next_cursor:
        rows.append(f"(more: --cursor {page.next_cursor})")
    emit(page.raw, json_, "\n".join(rows) or "no builds")


def _follow(client: CofounderClient, build_id: str, as_json: bool) -> None:
    from cofounder_cli.progress import follow as follow_events
    from cofounder_cli.progress import succeeded

    printed = (
        (lambda kind, data: typer.echo(json.dumps({"event": kind, **data}))) if as_json else None
    )
    with shown_errors(as_json):
        end: dict[str, Any] = follow_events(client, build_id, on_event=printed)
    if not succeeded(end):
        raise typer.Exit(1)
    if not as_json and end.get("preview_url"):
        typer.echo(f"preview: {end['preview_url']}")


@app.command("follow")
def follow_(
    build_id: BuildArg,
    token: TokenOpt,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """Print the build's events live, from its start, until it ends (exit 1 unless completed)."""
    with founder_client(gateway_url, token) as client:
        _follow(client, build_id, json_)


@app.command()
def cancel(
    build_id: BuildArg,
    token: TokenOpt,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """Cancel the build (the agent stops before its next step)."""
    with shown_errors(json_), founder_client(gateway_url, token) as client:
        build = client.cancel_build(build_id)
    emit(build.raw, json_, f"build {build.id} {build.status}")
