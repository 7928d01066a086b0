"""``cofounder dlq list|show|replay|purge``: the dead letters of every stream.

Human-readable output by default; ``--json`` prints one JSON document for scripts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from redis.asyncio import Redis

# Redis and the runtime (most of a second to import) are imported when a command runs.

app = typer.Typer(help="Inspect, replay and purge dead letters.", no_args_is_help=True)

T = TypeVar("T")
RedisOpt = Annotated[
    str | None, typer.Option("--redis-url", metavar="URL", help="Default: $REDIS_URL.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
StreamArg = Annotated[
    str, typer.Argument(metavar="STREAM", help="The source stream (not the .dlq key).")
]


def _run(url: str | None, action: Callable[[Redis], Awaitable[T]]) -> T:
    from cofounder_cli.redisconn import redis_client

    async def go() -> T:
        async with redis_client(url) as redis:
            return await action(redis)

    return asyncio.run(go())


def _emit_json(value: Any) -> None:
    import msgspec

    typer.echo(msgspec.json.format(msgspec.json.encode(value)).decode())


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
def list_(
    stream: Annotated[
        str | None, typer.Argument(metavar="[STREAM]", help="Omit to count every DLQ.")
    ] = None,
    count: Annotated[int, typer.Option(metavar="N", help="At most this many entries.")] = 50,
    after: Annotated[
        str, typer.Option(metavar="ID", help="Start after this DLQ id (paging).")
    ] = "-",
    redis_url: RedisOpt = None,
    json: JsonOpt = False,
) -> None:
    """Without STREAM: every stream with dead letters and how many. With it: its dead letters."""
    from cofounder_runtime import deadletter

    if stream is None:
        counts = _run(redis_url, deadletter.dead_letter_streams)
        if json:
            _emit_json(counts)
            return
        if not counts:
            typer.echo("no dead letters")
        for name, n in counts.items():
            typer.echo(f"{n:>8}  {name}")
        return
    dead = _run(redis_url, lambda r: deadletter.list_dead(r, stream, count=count, after=after))
    if json:
        _emit_json(dead)
        return
    if not dead:
        typer.echo(f"no dead letters for {stream}")
    for d in dead:
        typer.echo(
            f"{d.dlq_id}  {_when(d.failed_at_ms)}  {d.type or '?':<28} "
            f"group={d.group} deliveries={d.deliveries}  {d.error[:120]}"
        )


@app.command()
def show(
    stream: StreamArg,
    dlq_id: Annotated[str, typer.Argument(metavar="DLQ_ID", help="The dead letter's id.")],
    redis_url: RedisOpt = None,
    json: JsonOpt = False,
) -> None:
    """One dead letter in full: where it came from, its error, its payload."""
    import msgspec

    from cofounder_runtime import deadletter

    dead = _run(redis_url, lambda r: deadletter.show_dead(r, stream, dlq_id))
    if dead is None:
        typer.echo(f"error: no dead letter {dlq_id} in {stream}.dlq", err=True)
        raise typer.Exit(1)
    if json:
        _emit_json(dead)
        return
    for field in msgspec.structs.fields(dead):
        typer.echo(f"{field.name:>13}: {getattr(dead, field.name)}")


def _select(ids: list[str] | None, all_: bool) -> list[str] | None:
    if bool(ids) == all_:
        typer.echo("error: give dead-letter ids or --all (not both)", err=True)
        raise typer.Exit(2)
    return None if all_ else ids


@app.command()
def replay(
    stream: StreamArg,
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Dead-letter ids.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    redis_url: RedisOpt = None,
    json: JsonOpt = False,
) -> None:
    """Re-add dead letters to STREAM (same event_id, new entry id) and delete them from the DLQ.

    Every consumer group on the stream sees the replayed entry; groups that already handled it
    absorb it as a duplicate.
    """
    from cofounder_runtime import deadletter

    chosen = _select(ids, all_)
    new_ids = _run(redis_url, lambda r: deadletter.replay(r, stream, chosen))
    if json:
        _emit_json({"replayed": [i.decode() for i in new_ids]})
        return
    typer.echo(f"replayed {len(new_ids)} dead letter(s) into {stream}")


@app.command()
def purge(
    stream: StreamArg,
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Dead-letter ids.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Purge every dead letter.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    redis_url: RedisOpt = None,
    json: JsonOpt = False,
) -> None:
    """Delete dead letters for good."""
    from cofounder_runtime import deadletter

    chosen = _select(ids, all_)
    what = "every dead letter" if chosen is None else f"{len(chosen)} dead letter(s)"
    if not yes and not typer.confirm(f"Delete {what} of {stream}?"):
        raise typer.Exit(1)
    removed = _run(redis_url, lambda r: deadletter.purge(r, stream, chosen))
    if json:
        _emit_json({"purged": removed})
        return
    typer.echo(f"purged {removed} dead letter(s) from {stream}.dlq")
