"""Agent runner benchmark: the loop's own cost, checkpoint growth, concurrency, prompt caching.

    uv run python benchmarks/runner.py            # full run (a few minutes)
    uv run python benchmarks/runner.py --quick    # a smaller run, same shape

Real parts throughout: PostgreSQL (a fresh database, migrated), Redis, the scripted model server
over HTTP through the ``anthropic`` SDK, local sandboxes.

1. Loop overhead: one build of a generated 150-turn transcript (one cheap tool per turn) runs
   in-process; each iteration's wall time minus its model call and tool time is the loop's own
   cost (gate and cancel read, checkpoint write, events, request building). Target: p50 at most
   1% of a 200 ms model call. Reference in the same run: one bare PostgreSQL commit plus one
   Redis round trip, the floor any checkpointing loop pays.
2. Checkpoint writes: the append's time at iterations 141-150 against 1-10 (target: ≤ 1.5x),
   because each checkpoint holds only what is new.
3. Concurrency: one runner *process* (``cofounder serve agent-runner``) drives 100 builds at once
   against the scripted server at 500 ms latency; all must complete. Its CPU time and peak RSS
   (from /proc) are reported, with the ideal wall time (turns x latency) for comparison.
4. Prompt caching: the 100-iteration transcript with and without cache breakpoints; input
   billed at list-price weights (cache write 1.25x, cache read 0.1x plain input). Target: with
   caching at most 25% of without.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvloop
import yaml
from redis.exceptions import ResponseError
from sqlalchemy import text

from cofounder_agent_runner.checkpoints import CheckpointStore
from cofounder_agent_runner.loop import Outcome, drive
from cofounder_agent_runner.model import ModelClient
from cofounder_agent_runner.testing import Harness, context_ready, fast_settings, read_build_events
from cofounder_agent_runner.tools.dispatcher import ToolDispatcher
from cofounder_contracts import BudgetUsage, BuildCompleted
from cofounder_contracts.streams import AGENT_RUNNER, AGENT_WORK, BUILD_EVENTS
from cofounder_db.migrate import upgrade
from cofounder_runtime.connections import connect_redis
from cofounder_runtime.publisher import Publisher
from cofounder_scripted_model.process import start
from cofounder_testing.databases import empty_database
from cofounder_testing.servers import own_redis_server

#: The benchmark's own Redis (started in main: it is never a developer's or a stack's server).
_REDIS: dict[str, str] = {}
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
BENCH_DB = 8
MODEL_CALL_MS = 200.0
TARGET_OVERHEAD_SHARE = 0.01
TARGET_CHECKPOINT_GROWTH = 1.5
TARGET_CACHED_SHARE = 0.25
WRITE_WEIGHT, READ_WEIGHT = 1.25, 0.1


def transcript(turns: int) -> dict[str, Any]:
    """``turns`` turns of one cheap tool each (the loop is measured, not the tools); finish."""
    out: list[dict[str, Any]] = []
    for n in range(turns - 1):
        if n == 0:
            tool = {
                "name": "str_replace_based_edit_tool",
                "input": {
                    "command": "create",
                    "path": "/home/user/project/notes.md",
                    "file_text": "# Notes\n" + "A line of notes.\n" * 40,
                },
            }
        elif n % 2:
            tool = {
                "name": "str_replace_based_edit_tool",
                "input": {
                    "command": "view",
                    "path": "/home/user/project/notes.md",
                    "view_range": [1, 10],
                },
            }
        else:
            tool = {"name": "glob", "input": {"pattern": "*.md"}}
        out.append(
            {
                "text": f"Step {n}: checking the notes again to be sure they are right.",
                "tools": [tool],
            }
        )
    out.append({"tools": [{"name": "finish", "input": {"summary": "done"}}]})
    return {"name": f"bench-{turns}", "turns": out}


@contextmanager
def transcript_file(turns: int) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(transcript(turns), f)
    try:
        yield f.name
    finally:
        os.unlink(f.name)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Timings:
    """Wraps the model call, tools and checkpoint append to time them."""

    def __init__(self) -> None:
        self.model: list[tuple[float, float]] = []
        self.tools: list[float] = []
        self.appends: list[float] = []

    def install(self) -> None:
        timings = self
        original_complete = ModelClient.complete
        original_run = ToolDispatcher.run
        original_append = CheckpointStore.append

        async def complete(self: ModelClient, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await original_complete(self, **kwargs)
            finally:
                timings.model.append((began, time.perf_counter()))

        async def run(self: ToolDispatcher, name: str, input_: Any) -> Any:
            began = time.perf_counter()
            try:
                return await original_run(self, name, input_)
            finally:
                timings.tools.append(time.perf_counter() - began)

        async def append(self: CheckpointStore, *args: Any, **kwargs: Any) -> int:
            began = time.perf_counter()
            try:
                return await original_append(self, *args, **kwargs)
            finally:
                timings.appends.append(time.perf_counter() - began)

        ModelClient.complete = complete  # type: ignore[method-assign]
        ToolDispatcher.run = run  # type: ignore[method-assign]
        CheckpointStore.append = append  # type: ignore[method-assign]


async def floor_ms(harness: Harness, rounds: int = 200) -> float:
    """One PostgreSQL commit and one Redis round trip: the floor of a checkpointing iteration."""
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        async with harness.deps.engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
        await harness.redis.ping()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


async def loop_overhead(database_url: str, turns: int, workdir: Path) -> dict[str, Any]:
    timings = Timings()
    timings.install()
    with transcript_file(turns) as path, start(path) as model:
        redis = connect_redis(_bench_redis())
        harness = Harness(
            settings=fast_settings(
                redis_url=_bench_redis(),
                database_url=database_url,
                model_url=model.url,
                sandbox_root=workdir / "overhead",
                max_tool_calls={"bootstrapper": 1000},
                snapshot_every=25,
            ),
            redis=redis,
        )
        try:
            floor = await floor_ms(harness)
            context = context_ready()
            began = time.perf_counter()
            outcome = await drive(
                harness.deps, build_id=context.build_id, context=context, reason="start"
            )
            wall = time.perf_counter() - began
            assert outcome is Outcome.COMPLETED, outcome
        finally:
            await harness.close()
            await redis.aclose()
    starts = [s for s, _ in timings.model]
    overheads = []
    for i in range(len(starts) - 1):
        iteration = starts[i + 1] - starts[i]
        model_time = timings.model[i][1] - timings.model[i][0]
        overheads.append((iteration - model_time - timings.tools[i]) * 1000)
    appends = [a * 1000 for a in timings.appends[1:]]  # [0] is the start part
    early = statistics.median(appends[:10])
    late = statistics.median(appends[turns - 10 : turns])
    return {
        "iterations": len(starts),
        "wall_s": round(wall, 2),
        "overhead_p50_ms": round(pct(overheads, 0.5), 3),
        "overhead_p99_ms": round(pct(overheads, 0.99), 3),
        "overhead_share_of_200ms_call": round(pct(overheads, 0.5) / MODEL_CALL_MS, 4),
        "floor_pg_commit_plus_redis_ms": round(floor, 3),
        "checkpoint_ms_iter_1_10": round(early, 3),
        "checkpoint_ms_iter_141_150": round(late, 3),
        "checkpoint_growth": round(late / early, 2),
    }


async def caching(database_url: str, turns: int, workdir: Path) -> dict[str, Any]:
    billed: dict[str, float] = {}
    raw: dict[str, dict[str, int]] = {}
    with transcript_file(turns) as path, start(path) as model:
        for cached in (True, False):
            redis = connect_redis(_bench_redis())
            harness = Harness(
                settings=fast_settings(
                    redis_url=_bench_redis(),
                    database_url=database_url,
                    model_url=model.url,
                    sandbox_root=workdir / f"cache-{cached}",
                    prompt_caching=cached,
                    max_tool_calls={"bootstrapper": 1000},
                ),
                redis=redis,
            )
            try:
                context = context_ready()
                outcome = await drive(
                    harness.deps, build_id=context.build_id, context=context, reason="start"
                )
                assert outcome is Outcome.COMPLETED, outcome
                usage = [
                    e for e in await harness.events(context.build_id) if isinstance(e, BudgetUsage)
                ]
            finally:
                await harness.close()
                await redis.aclose()
            key = "cached" if cached else "uncached"
            totals = {
                "input": sum(u.input_tokens for u in usage),
                "cache_write": sum(u.cache_creation_input_tokens for u in usage),
                "cache_read": sum(u.cache_read_input_tokens for u in usage),
                "calls": len(usage),
            }
            raw[key] = totals
            billed[key] = (
                totals["input"]
                + WRITE_WEIGHT * totals["cache_write"]
                + READ_WEIGHT * totals["cache_read"]
            )
    return {
        "turns": turns,
        "tokens": raw,
        "billed_cached": round(billed["cached"]),
        "billed_uncached": round(billed["uncached"]),
        "cached_share": round(billed["cached"] / billed["uncached"], 4),
    }


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in KiB) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return cpu, peak


def children_cpu(pid: int) -> float:
    """CPU seconds of the processes ``pid`` started and waited for (``ip``, ``nsenter``,
    ``setsid``...; not bubblewrap and pasta, which are not its children once started)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


async def _runner_process(
    url: str, database_url: str, model_url: str, builds: int, root: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ENVIRONMENT": "development",  # a service refuses to start with it unset (#14)
        "REDIS_URL": url,
        "DATABASE_URL": database_url,
        "ANTHROPIC_BASE_URL": model_url,
        "SANDBOX": "local",
        "SANDBOX_ROOT": str(root),
        "CONSUMER_CONCURRENCY": str(builds),
        "CONSUMER_NAME": "bench-runner",
        "LOG_LEVEL": "ERROR",
    }
    env.pop("ANTHROPIC_API_KEY", None)
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, "-m", "cofounder_cli", "serve", "agent-runner"], env=env
    )
    # Imports and connections are not part of the measured run: wait until its consumer has
    # read the work stream once (on a busy machine its imports alone can take 10 s and more).
    redis = connect_redis(url)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError("the runner process died")
            try:
                consumers = await redis.xinfo_consumers(AGENT_WORK.name, AGENT_RUNNER)
            except ResponseError:  # the stream or its group is not made yet
                consumers = []
            if consumers:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the runner process did not start reading in 3 minutes")
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
    await asyncio.sleep(1)
    return proc


async def runner_builds(
    database_url: str, model_url: str, builds: int, turns: int, root: Path
) -> dict[str, Any]:
    """``builds`` builds at once in one runner process: wall time, its CPU (own, and of the
    helpers it waited for) from /proc, its peak RSS."""
    url = f"{_REDIS['base']}/{BENCH_DB + 1}"  # empty: the earlier phases used BENCH_DB
    redis = connect_redis(url)
    await redis.flushdb()
    proc = await _runner_process(url, database_url, model_url, builds, root)
    try:
        cpu_before, _ = proc_stats(proc.pid)
        children_before = children_cpu(proc.pid)
        contexts = [context_ready() for _ in range(builds)]
        began = time.perf_counter()
        await Publisher(redis).publish_many((AGENT_WORK.name, c) for c in contexts)
        pending = {c.build_id for c in contexts}
        while pending:
            if proc.poll() is not None:
                raise RuntimeError("the runner process died")
            events = await read_build_events(redis, "*", (BUILD_EVENTS.name,))
            pending -= {e.build_id for e in events if isinstance(e, BuildCompleted)}
            if time.perf_counter() - began > 600:
                raise RuntimeError(f"{len(pending)} builds did not complete in 10 minutes")
            await asyncio.sleep(0.5)
        wall = time.perf_counter() - began
        cpu_after, peak_kib = proc_stats(proc.pid)
        children = children_cpu(proc.pid) - children_before
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        await redis.aclose()
    iterations = builds * turns
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu_after - cpu_before, 3),
        "cpu_ms_per_iteration": round((cpu_after - cpu_before) * 1000 / iterations, 3),
        "children_cpu_s": round(children, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


async def sandboxes_main(root: str, builds: int) -> None:
    """The sandbox phase's process: ``builds`` local sandboxes made at once, then killed at
    once, as the runner makes and kills them (``make_sandboxes`` with the runner's settings)."""
    from cofounder_agent_runner.bootstrap import make_sandboxes
    from cofounder_agent_runner.settings import RunnerSettings

    settings = RunnerSettings(
        environment="development",
        anthropic_base_url="http://127.0.0.1:9",  # never called: the settings want one
        sandbox="local",
        sandbox_root=root,
    )
    sandboxes = make_sandboxes(settings)
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    made = await asyncio.gather(
        *(
            sandboxes.create(build_id=context_ready().build_id, metadata={"tier": "bootstrapper"})
            for _ in range(builds)
        )
    )
    await asyncio.gather(*(s.kill() for s in made))
    print(json.dumps({"sandboxes": len(made)}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)


async def _measured_child(argv: list[str]) -> dict[str, Any]:
    """Run one of this file's roles in its own process: ``ready``, ``go``, its JSON answer;
    its CPU (own, and of the helpers it waited for) read from /proc like the runner's."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, __file__, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        if (await asyncio.to_thread(proc.stdout.readline)).strip() != "ready":
            raise RuntimeError(f"{argv[1]} did not start")
        cpu_before, _ = proc_stats(proc.pid)
        children_before = children_cpu(proc.pid)
        began = time.perf_counter()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        answer: dict[str, Any] = json.loads(await asyncio.to_thread(proc.stdout.readline))
        wall = time.perf_counter() - began
        cpu_after, peak_kib = proc_stats(proc.pid)
        children = children_cpu(proc.pid) - children_before
        proc.stdin.write("exit\n")
        proc.stdin.flush()
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return {
        **answer,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu_after - cpu_before, 3),
        "children_cpu_s": round(children, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


async def concurrency(
    database_url: str, builds: int, turns: int, latency_ms: float, workdir: Path
) -> dict[str, Any]:
    """The runner process against the bare SDK loop at the same concurrency, on the same
    scripted server, taking turns (bare, runner, sandboxes, bare): the ratio of CPU per
    iteration, with and without the sandboxes' start and stop (measured on their own)."""
    load_before = os.getloadavg()
    with transcript_file(turns) as path, start(path, latency_ms=latency_ms) as model:
        bare_argv = ["--role", "bare", "--model-url", model.url, "--builds", str(builds)]
        bare = [await _measured_child(bare_argv)]
        print(f"#   bare SDK loop: {bare[0]}", flush=True)
        runner = await runner_builds(
            database_url, model.url, builds, turns, workdir / "concurrency"
        )
        print(f"#   runner: {runner}", flush=True)
        boxes = await _measured_child(
            ["--role", "sandboxes", "--builds", str(builds), "--root", str(workdir / "boxes")]
        )
        print(f"#   sandboxes alone: {boxes}", flush=True)
        bare.append(await _measured_child(bare_argv))
        print(f"#   bare SDK loop: {bare[1]}", flush=True)
    load_after = os.getloadavg()
    iterations = builds * turns
    for b in bare:
        if b["calls"] != iterations:
            raise RuntimeError(f"the bare loop made {b['calls']} calls, not {iterations}")
    bare_ms = statistics.mean(b["cpu_s"] for b in bare) * 1000 / iterations
    runner_ms = runner["cpu_ms_per_iteration"]
    sandbox_ms_per_build = boxes["cpu_s"] * 1000 / builds
    without_sandbox_ms = runner_ms - sandbox_ms_per_build / turns
    return {
        "builds": builds,
        "turns_per_build": turns,
        "latency_ms": latency_ms,
        "completed": builds,
        "wall_s": runner["wall_s"],
        "ideal_wall_s": round(turns * latency_ms / 1000, 2),
        "cpu_s": runner["cpu_s"],
        "cpu_ms_per_iteration": runner_ms,
        "children_cpu_s": runner["children_cpu_s"],
        "peak_rss_mib": runner["peak_rss_mib"],
        "bare_sdk": bare,
        "bare_cpu_ms_per_iteration": round(bare_ms, 3),
        "sandbox_start_stop": boxes,
        "sandbox_cpu_ms_per_build": round(sandbox_ms_per_build, 2),
        "cpu_ms_per_iteration_without_sandbox": round(without_sandbox_ms, 3),
        "runner_vs_bare": round(runner_ms / bare_ms, 2),
        "runner_vs_bare_without_sandbox": round(without_sandbox_ms / bare_ms, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }


# -- the bare SDK loop (its own process) --------------------------------------------------------


def _bare_result(use: dict[str, Any], files: dict[str, str]) -> str:
    """What the runner's tools answer to the transcript's calls, in the same words and sizes
    (the editor's ``create`` and ``view``, ``glob``), without running anything."""
    tool_input = use.get("input") or {}
    if use["name"] == "glob":
        return "\n".join(sorted(p.rsplit("/", 1)[-1] for p in files))
    path = str(tool_input.get("path", ""))
    if tool_input.get("command") == "create":
        files[path] = str(tool_input.get("file_text", ""))
        return f"File created successfully at: {path}"
    first, last = tool_input.get("view_range") or (1, -1)
    lines = files.get(path, "").split("\n")
    shown = lines[first - 1 : None if last == -1 else last]
    body = "\n".join(f"{n:6}\t{line}" for n, line in enumerate(shown, first))
    return f"Here's the result of running `cat -n` on {path}:\n{body}"


async def _bare_conversation(client: Any, model: str, max_tokens: int) -> int:
    """One conversation through the SDK's streaming call, as the runner makes it (the same
    system prompt, tools, cache breakpoints and messages), until the model calls ``finish``:
    no checkpoint, no events, no sandbox. Returns the number of model calls."""
    from cofounder_agent_runner.prompt import (
        CACHED_TOOLS,
        first_message,
        request_messages,
        system_blocks,
        system_prompt,
    )

    context = context_ready()
    system = system_blocks(system_prompt(context))
    messages: list[dict[str, Any]] = [first_message(context)]
    files: dict[str, str] = {}
    calls = 0
    while True:
        async with client.messages.stream(
            model=model,
            max_tokens=max_tokens,
            system=system,
            tools=CACHED_TOOLS,
            messages=request_messages(messages),
            metadata={"user_id": context.build_id},
        ) as stream:
            final = await stream.get_final_message()
        calls += 1
        content = [b.model_dump(exclude_none=True) for b in final.content]
        uses = [b for b in content if b["type"] == "tool_use"]
        if not uses or any(u["name"] == "finish" for u in uses):
            return calls
        messages.append({"role": "assistant", "content": content})
        results = [
            {"type": "tool_result", "tool_use_id": u["id"], "content": _bare_result(u, files)}
            for u in uses
        ]
        messages.append({"role": "user", "content": results})


async def bare_main(model_url: str, builds: int) -> None:
    """The bare loop's process: ``ready``, wait for ``go``, run ``builds`` conversations at
    once, print the calls made, then wait (the parent reads this process's CPU from /proc)."""
    import anthropic

    from cofounder_agent_runner.plans import resolve_model
    from cofounder_agent_runner.settings import RunnerSettings

    settings = RunnerSettings(environment="development", anthropic_base_url=model_url)
    client = anthropic.AsyncAnthropic(
        api_key="scripted-model-needs-no-key",
        base_url=model_url,
        max_retries=0,
        timeout=settings.model_timeout_s,
    )
    model = resolve_model(settings.model_map, tier="bootstrapper", suspended=False)
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    calls = await asyncio.gather(
        *(_bare_conversation(client, model, settings.max_tokens) for _ in range(builds))
    )
    print(json.dumps({"calls": sum(calls)}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await client.close()


def _bench_redis() -> str:
    return f"{_REDIS['base']}/{BENCH_DB}"


def _print_concurrency(c: dict[str, Any]) -> None:
    print(
        f"{c['builds']} concurrent builds x {c['turns_per_build']} turns at 500 ms: all "
        f"completed in {c['wall_s']} s (ideal {c['ideal_wall_s']} s); runner CPU {c['cpu_s']} s "
        f"({c['cpu_ms_per_iteration']} ms per iteration; its waited-for helpers "
        f"{c['children_cpu_s']} s), peak RSS {c['peak_rss_mib']} MiB"
    )
    bare = c["bare_sdk"]
    print(
        f"bare SDK loop, same server, {c['builds']} conversations at once: "
        f"{c['bare_cpu_ms_per_iteration']} ms CPU per iteration (runs: "
        f"{', '.join(str(b['cpu_s']) + ' s' for b in bare)}; wall "
        f"{', '.join(str(b['wall_s']) + ' s' for b in bare)})"
    )
    boxes = c["sandbox_start_stop"]
    print(
        f"{c['builds']} sandboxes made and killed at once, on their own: {boxes['cpu_s']} s CPU "
        f"({c['sandbox_cpu_ms_per_build']} ms per build; waited-for helpers "
        f"{boxes['children_cpu_s']} s)"
    )
    print(
        f"runner / bare SDK, CPU per iteration: {c['runner_vs_bare']}x with the sandbox's start "
        f"and stop, {c['runner_vs_bare_without_sandbox']}x without "
        f"({c['cpu_ms_per_iteration_without_sandbox']} ms); load average "
        f"{c['loadavg_before'][0]} -> {c['loadavg_after'][0]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only", choices=("concurrency",), help="run one section (the others are skipped)"
    )
    parser.add_argument("--role", choices=("bare", "sandboxes"), help=argparse.SUPPRESS)
    parser.add_argument("--model-url", help=argparse.SUPPRESS)
    parser.add_argument("--builds", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "bare":  # uvloop, as the runner's process (cofounder serve) runs
        uvloop.run(bare_main(args.model_url, args.builds))
        return
    if args.role == "sandboxes":
        uvloop.run(sandboxes_main(args.root, args.builds))
        return
    with (
        own_redis_server() as redis_url,
        empty_database(DATABASE_URL) as database_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        _REDIS["base"] = redis_url.rsplit("/", 1)[0]
        upgrade(database_url)
        asyncio.run(measure(database_url, Path(tmp), quick=args.quick, only=args.only))


async def measure(database_url: str, workdir: Path, *, quick: bool, only: str | None) -> None:
    turns = 150
    builds = 30 if quick else 100
    print(f"python {platform.python_version()}, {os.cpu_count()} cores", flush=True)
    if only == "concurrency":
        c = await concurrency(database_url, builds, 10, 500.0, workdir)
        _print_concurrency(c)
        print(json.dumps({"benchmark": "runner", "quick": quick, "concurrency": c}))
        return
    o = await loop_overhead(database_url, turns, workdir)
    print(
        f"loop overhead per iteration: p50 {o['overhead_p50_ms']} ms, "
        f"p99 {o['overhead_p99_ms']} ms ({o['overhead_share_of_200ms_call']:.2%} of a 200 ms "
        f"call; floor, one PG commit + one Redis round trip: "
        f"{o['floor_pg_commit_plus_redis_ms']} ms)"
    )
    print(
        f"checkpoint append: {o['checkpoint_ms_iter_1_10']} ms at iterations 1-10, "
        f"{o['checkpoint_ms_iter_141_150']} ms at 141-150 (x{o['checkpoint_growth']})"
    )
    cache = await caching(database_url, 100, workdir)
    print(
        f"billed-equivalent input tokens, 100 iterations: cached {cache['billed_cached']:,} "
        f"vs uncached {cache['billed_uncached']:,} ({cache['cached_share']:.1%})"
    )
    c = await concurrency(database_url, builds, 10, 500.0, workdir)
    _print_concurrency(c)
    overhead, conc = o, c
    targets = {
        "overhead_p50_within_1pct_of_200ms": overhead["overhead_share_of_200ms_call"]
        <= TARGET_OVERHEAD_SHARE,
        "checkpoint_growth_within_1_5x": overhead["checkpoint_growth"] <= TARGET_CHECKPOINT_GROWTH,
        "cached_input_within_25pct": cache["cached_share"] <= TARGET_CACHED_SHARE,
        "all_concurrent_builds_completed": conc["completed"] == conc["builds"],
    }
    print(
        json.dumps(
            {
                "benchmark": "runner",
                "quick": quick,
                "overhead": overhead,
                "caching": cache,
                "concurrency": conc,
                "targets_met": targets,
            }
        )
    )


if __name__ == "__main__":
    main()
