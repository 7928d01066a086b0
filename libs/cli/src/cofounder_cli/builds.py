"""``cofounder builds create|get|list|follow|cancel``: a founder's builds, on the REST API.

Human-readable output by default, ``--json`` for scripts. The token comes from ``--token`` or
``$COFOUNDER_TOKEN`` (``cofounder seed demo`` prints one); the gateway from ``--gateway-url`` or
``$COFOUNDER_GATEWAY_URL``. API errors print the problem's status, title and detail and exit 1;
``follow`` exits 0 when the build completes and 1 when it fails or is cancelled.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import httpx

# httpx (a quarter of a second to import) is imported by the commands that call the gateway,
# not here: ``--help`` never needs it.

app = typer.Typer(
    help="Start, read, follow and cancel builds (the gateway's REST API).", no_args_is_help=True
)

TokenOpt = Annotated[
    str,
    typer.Option(
        "--token", envvar="COFOUNDER_TOKEN", help="Bearer token (default: $COFOUNDER_TOKEN)."
    ),
]
GatewayOpt = Annotated[
    str,
    typer.Option(
        "--gateway-url", envvar="COFOUNDER_GATEWAY_URL", help="Default: $COFOUNDER_GATEWAY_URL."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
BuildArg = Annotated[str, typer.Argument(help="The build id.")]
DEFAULT_GATEWAY = "http://127.0.0.1:8000"


def _client(gateway_url: str, token: str) -> httpx.Client:
    import httpx

    return httpx.Client(
        base_url=gateway_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            problem = response.json()
            message = f"{problem.get('title', '')}: {problem.get('detail', '')}".strip(": ")
        except ValueError:
            message = response.text
        typer.echo(f"error: {response.status_code} {message}", err=True)
        raise typer.Exit(1)
    return response.json()


def call(gateway_url: str, token: str, method: str, path: str, **kwargs: Any) -> Any:
    """One REST call; an API error or an unreachable gateway prints why and exits 1."""
    import httpx

    try:
        with _client(gateway_url, token) as client:
            return _check(client.request(method, path, **kwargs))
    except httpx.TransportError as exc:
        typer.echo(f"error: cannot reach the gateway at {gateway_url}: {exc}", err=True)
        raise typer.Exit(1) from None


def _show(build: dict[str, Any]) -> str:
    lines = [
        f"build    {build['id']}",
        f"project  {build['project_id']}",
        f"status   {build['status']}",
        f"goal     {build['goal']}",
        f"progress {build['iterations']} iterations, {build['tool_calls']} tool calls, "
        f"{build['input_tokens']:,} tokens in / {build['output_tokens']:,} out",
    ]
    if build.get("build_version") is not None:
        lines.append(f"version  {build['build_version']}")
    if build.get("preview_url"):
        lines.append(f"preview  {build['preview_url']}")
    if build.get("error"):
        lines.append(f"error    {build['error']}")
    return "\n".join(lines)


def emit(value: Any, as_json: bool, human: str) -> None:
    typer.echo(json.dumps(value) if as_json else human)


@app.command()
def create(
    project: Annotated[str, typer.Option("--project", help="The project to build.")],
    token: TokenOpt,
    goal: Annotated[str | None, typer.Option(help="What to build (default: the MVP).")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe key.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Then follow its events.")] = False,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """Start a build of PROJECT (202: queued)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    body = {"goal": goal} if goal else {}
    build = call(
        gateway_url, token, "POST", f"/v1/projects/{project}/builds", json=body, headers=headers
    )
    emit(build, json_, f"build {build['id']} {build['status']}")
    if follow:
        _follow(gateway_url, token, build["id"], json_)


@app.command()
def get(
    build_id: BuildArg,
    token: TokenOpt,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """One build: status, progress, version, preview URL, error."""
    build = call(gateway_url, token, "GET", f"/v1/builds/{build_id}")
    emit(build, json_, _show(build))


@app.command("list")
def list_(
    token: TokenOpt,
    status: Annotated[str | None, typer.Option(help="Only builds in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor.")] = None,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """Your builds, newest first (``--cursor`` for the next page)."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    if cursor:
        params["cursor"] = cursor
    page = call(gateway_url, token, "GET", "/v1/builds", params=params)
    rows = [
        f"{b['id']}  {b['status']:<10} v{b['build_version'] or '-':<3} {b['preview_url'] or ''}"
        for b in page["items"]
    ]
    if page.get("next_cursor"):
        rows.append(f"(more: --cursor {page['next_cursor']})")
    emit(page, json_, "\n".join(rows) or "no builds")


def _follow(gateway_url: str, token: str, build_id: str, as_json: bool) -> None:
    import httpx

    from cofounder_cli.progress import follow as follow_events
    from cofounder_cli.progress import succeeded

    printed = (
        (lambda kind, data: typer.echo(json.dumps({"event": kind, **data}))) if as_json else None
    )
    try:
        with _client(gateway_url, token) as client:
            end = follow_events(client, build_id, on_event=printed)
    except httpx.HTTPStatusError as exc:
        _check(exc.response)
        raise
    except httpx.TransportError as exc:
        typer.echo(f"error: cannot reach the gateway at {gateway_url}: {exc}", err=True)
        raise typer.Exit(1) from None
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
    _follow(gateway_url, token, build_id, json_)


@app.command()
def cancel(
    build_id: BuildArg,
    token: TokenOpt,
    gateway_url: GatewayOpt = DEFAULT_GATEWAY,
    json_: JsonOpt = False,
) -> None:
    """Cancel the build (the agent stops before its next step)."""
    build = call(gateway_url, token, "POST", f"/v1/builds/{build_id}/cancel")
    emit(build, json_, f"build {build['id']} {build['status']}")
