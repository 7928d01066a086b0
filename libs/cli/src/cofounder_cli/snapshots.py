"""``cofounder snapshots list|restore``: the snapshots of a project's builds, for SREs.

The store comes from the same settings as the services: ``PROJECT_SNAPSHOT_BUCKET`` (with
``SNAPSHOT_PREFIX`` and ``S3_ENDPOINT_URL``) or ``SNAPSHOT_LOCAL_DIR``. ``restore`` writes a
version into a folder (to inspect it, or to seed a sandbox by hand); the agent runner restores
into replacement sandboxes by itself.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from cofounder_snapshots.store import SnapshotStore

# The store (aioboto3, botocore: most of a second to import) is imported when a command runs.

app = typer.Typer(help="List and restore project snapshots.", no_args_is_help=True)

ProjectOpt = Annotated[str, typer.Option("--project", metavar="PROJECT_ID", help="The project id.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _store() -> SnapshotStore:
    from cofounder_runtime.settings import load_settings
    from cofounder_snapshots.config import OFF_REASON, SnapshotStoreSettings

    # The services' own variables (PROJECT_SNAPSHOT_BUCKET, SNAPSHOT_LOCAL_DIR, ...), read alike.
    store = load_settings(SnapshotStoreSettings, service="cofounder snapshots").snapshot_store()
    if store is None:
        typer.echo(f"error: {OFF_REASON}", err=True)
        raise typer.Exit(2)
    return store


async def _list(project: str, build: str | None) -> list[dict[str, Any]]:
    async with _store() as store:
        builds = [build] if build else await store.builds(project)
        out = []
        for each in builds:
            for version in await store.versions(project, each):
                manifest = await store.get_manifest(project, each, version)
                out.append(
                    {
                        "build_id": each,
                        "version": version,
                        "created_at": manifest.created_at.isoformat(),
                        "files": len(manifest.files),
                        "bytes": manifest.total_bytes,
                        "too_large": manifest.too_large,
                    }
                )
        return out


@app.command("list")
def list_(
    project: ProjectOpt,
    build: Annotated[
        str | None, typer.Option("--build", metavar="BUILD_ID", help="Only this build.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Every stored version of the project's builds (or one build's)."""
    from cofounder_snapshots.store import StoreError

    try:
        rows = asyncio.run(_list(project, build))
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if json_:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        size = f"{r['files']} files, {r['bytes']:,} bytes"
        typer.echo(f"{r['build_id']}  v{r['version']:<4} {r['created_at']}  {size}")
    if not rows:
        typer.echo("no snapshots")


@app.command()
def restore(
    project: ProjectOpt,
    build: Annotated[
        str,
        typer.Option("--build", metavar="BUILD_ID", help="The build whose snapshot to restore."),
    ],
    to: Annotated[
        Path, typer.Option("--to", metavar="DIR", help="The folder to write the files into.")
    ],
    version: Annotated[int | None, typer.Option(metavar="N", help="Default: the latest.")] = None,
) -> None:
    """Write a snapshot version of BUILD into a folder, byte for byte (modes included)."""
    from cofounder_snapshots.store import StoreError
    from cofounder_snapshots.sync import restore as restore_into

    async def go() -> Any:
        async with _store() as store:
            return await restore_into(
                store, to, project_id=project, build_id=build, version=version
            )

    try:
        manifest = asyncio.run(go())
    except (StoreError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if manifest is None:
        typer.echo(f"error: build {build} has no snapshot", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"restored version {manifest.version} of {build}: {len(manifest.files)} files into {to}"
    )
