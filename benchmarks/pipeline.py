"""Pipeline benchmark: the whole pipeline as processes, end to end, and how it scales out.

    uv run python benchmarks/pipeline.py            # full run (several minutes)
    uv run python benchmarks/pipeline.py --quick    # a smaller run, same shape
    uv run python benchmarks/pipeline.py --budget-only   # part 3 alone

Every service is a real process (``cofounder serve``, as the chaos test starts them:
``cofounder_testing.pipeline``) on one Redis (the benchmark's own ``redis-server``, no
persistence) and one PostgreSQL (a throwaway server started for the benchmark with
``cofounder_runtime.localpostgres``, so that all of its CPU is the benchmark's). The model is the
scripted server at ``--latency-ms`` (default 1,000 ms) before each reply, streaming its text and
tool input in deltas of 40 characters (about ten tokens each, as the API streams), on a generated
transcript of ``--turns`` turns with realistic sizes (150-600 output tokens a turn, an input that
grows with the conversation, cache reads from the second call). Sandboxes are local with
``SANDBOX_ISOLATION=unsafe-none``: production's sandboxes are E2B's (remote, HTTP calls from the
runner), so the bubblewrap and pasta processes of the local namespaces sandbox are a cost no
runner pod pays (``--isolation namespaces`` to include them).

1. Pipeline: one process of each service; builds of several founders submitted over REST at a
   paced rate (``--rate``). Reported: builds/s sustained (completions per second against the
   offered rate); time from the POST to ``context.ready`` (the entry on the agent work stream),
   to the build's first model request (the scripted server's log) and to ``build.completed``
   (p50/p99); CPU seconds per build of each service (``/proc/PID/stat``: utime + stime, reaped
   children included), of Redis (its process) and of PostgreSQL (the postmaster and every
   backend); peak RSS of each service.
2. Scale-out: the same work with 1, 2 and 4 agent runners and 1, 2 and 4 budget services. Each
   runner drives at most ``--per-runner`` builds at once (``CONSUMER_CONCURRENCY``, what a
   deployment sets so that a pod's builds fit its memory and CPU): one runner is limited by that
   setting and the model's latency, not by CPU, as a real deployment is. Each round submits
   replicas x per-runner x ``--waves`` builds at once; throughput is builds per second from the
   first POST to the last ``build.completed``. Target: 4 runners >= 3.4x one. How the work
   spread: builds each runner drove, first deliveries and claims (the agent work stream's
   pending entries, sampled every 0.3 s: an entry stays pending while its build runs), events
   each budget process handled (its ``cofounder_events_handled``).
3. The budget service on its own: 1, 2 and 4 ``cofounder serve budget`` processes (nothing else
   but Redis and PostgreSQL) drain the same backlog of ``budget.usage`` events
   (``--usage-events``: builds of ``--turns`` model calls of 20 founders, each founder a
   ``users`` row of one of the plans, the usage of each call as the runner reports it: its
   derived event id, input, output, cache write and cache read tokens). The processes start on
   an empty stream and, once every one reads, are stopped (SIGSTOP) while the backlog is
   published, then continued together: throughput is the events over the time from SIGCONT to
   the group having nothing unread and nothing pending, so it is the drain rate, not the
   publisher's. Reported per round: events/s and the ratio against one process, the events each
   process handled (its ``cofounder_events_handled``; spread max/mean), the CPU of each process,
   of Redis and of PostgreSQL (share of a core, and ms per event), their total against the
   machine's cores and the whole machine's busy share (``/proc/stat``), so that the bottleneck
   is named with a measurement. Every event must be in the ledger once (checked).

Machine load: the figures that count are per-unit costs and ratios measured in the same run;
``os.getloadavg()`` at the start is in the JSON. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import redis as sync_redis
import yaml

from cofounder_contracts import BudgetUsage, encode_fields, envelope
from cofounder_contracts.ids import new_event_id
from cofounder_contracts.streams import AGENT_WORK, ALL_STREAMS, BUDGET_USAGE, BUILD_EVENTS
from cofounder_db.migrate import upgrade
from cofounder_runtime.localpostgres import local_postgres
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_testing.pipeline import TIERS, Stack, at_rest, dead_letters, stack_env
from cofounder_testing.servers import free_port
from cofounder_testing.services import serve_argv

ADMIN = {"Authorization": "Bearer dev-admin-token"}
TICKS = os.sysconf("SC_CLK_TCK")
TARGET_SCALE_4 = 3.4
DELTA_CHARS = 40
FOUNDERS = 20
IDLE_S = 5.0
SERVICES = ("gateway", "context-assembler", "agent-runner", "budget", "snapshot")


# --- the transcript ---------------------------------------------------------------------------


def transcript(turns: int) -> dict[str, Any]:
    """``turns`` turns: reasoning text (about 150 tokens) and one tool call each; every other
    call writes a file of about 400 tokens, the rest read one back; then ``finish``."""
    reasoning = (
        "Looking at the project so far, the next step is to {what}. I will keep the change "
        "small and check it against the brief before moving on: the landing page has to load "
        "quickly, the health endpoint must answer JSON, and every file should stay readable for "
        "the founder who will take it over. After this I will review what is left and decide "
        "whether the tests cover the behaviour that matters, then continue with the next part "
        "of the plan."
    )
    body = "".join(
        f"def handler_{n}(request):\n    return {{'status': 'ok', 'n': {n}}}\n\n" for n in range(30)
    )
    out: list[dict[str, Any]] = []
    for n in range(turns - 1):
        path = f"/home/user/project/module_{n // 2}.py"
        if n % 2 == 0:
            tool = {
                "name": "str_replace_based_edit_tool",
                "input": {"command": "create", "path": path, "file_text": body},
            }
            what = f"write module {n // 2}"
        else:
            tool = {
                "name": "str_replace_based_edit_tool",
                "input": {"command": "view", "path": path, "view_range": [1, 20]},
            }
            what = f"read module {n // 2} back"
        out.append({"text": reasoning.format(what=what), "tools": [tool]})
    out.append({"tools": [{"name": "finish", "input": {"summary": "The app is built."}}]})
    return {"name": f"pipeline-{turns}", "turns": out}


@contextlib.contextmanager
def model_server(turns: int, latency_ms: float, workdir: Path) -> Iterator[ScriptedModel]:
    path = workdir / "transcript.yaml"
    path.write_text(yaml.safe_dump(transcript(turns)))
    with start(
        str(path), latency_ms=latency_ms, extra=["--delta-chars", str(DELTA_CHARS)]
    ) as model:
        yield model


# --- processes: CPU and memory from /proc -----------------------------------------------------


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``: its own, its reaped children's, its live children's."""
    fields = _stat(pid)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for child in _children(pid):
        with contextlib.suppress(OSError):
            c = _stat(child)
            total += int(c[11]) + int(c[12])
    return total / TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- one round: a stack, builds submitted, everything timed -----------------------------------


@dataclass
class Round:
    """One stack of processes (``replicas`` runners and budget services) and its builds; with
    ``budget_only``, ``replicas`` budget services alone (part 3)."""

    root: Path
    database_url: str
    postmaster: int
    model: ScriptedModel
    replicas: int
    per_runner: int
    isolation: str
    budget_only: bool = False
    stack: Stack = field(init=False)
    metrics: dict[str, int] = field(default_factory=dict)  # slot -> metrics port

    def __post_init__(self) -> None:
        port = free_port()
        env = stack_env(
            root=self.root,
            redis_port=port,
            database_url=self.database_url,
            model_url=self.model.url,
            builds=10_000,
            LOG_JSON="true",
        )
        env.update(
            ENVIRONMENT="development",
            LOG_LEVEL="INFO",
            SANDBOX_ISOLATION=self.isolation,
            # The benchmark's own PostgreSQL: pools nearer production's than the tests' (its
            # max_connections, 100, still bounds them with four runners and four budgets).
            DATABASE_POOL_SIZE="8",
            WRITE_POOL_SIZE="4",
            # Production's consumer timings, not the tests' short ones.
            CONSUMER_BLOCK_MS="1000",
            CONSUMER_MIN_IDLE_MS="60000",
            LEASE_TTL_MS="20000",
        )
        env.pop("COUNTERS_CHECK_INTERVAL_S", None)
        self.stack = Stack(root=self.root, env=env, redis_port=port, redis_persistent=False)

    def slots(self) -> list[str]:
        runners = [f"agent-runner{n}" for n in range(1, self.replicas + 1)]
        budgets = [f"budget{n}" for n in range(1, self.replicas + 1)]
        if self.budget_only:
            return budgets
        return [
            "gateway",
            "gateway-projection",
            "context-assembler",
            *runners,
            *budgets,
            "snapshot",
        ]

    def start(self) -> None:
        self.stack.start_redis()
        for slot in self.slots():
            service = slot.rstrip("0123456789")
            env = {**self.stack.env, "CONSUMER_NAME": f"{slot}-0"}
            # The API (with the outbox relay) and the status projection apart, as deployed.
            if service == "gateway":
                env["RUN_PROJECTION"] = "false"
            elif service == "gateway-projection":
                service = "gateway"
                env.update(SERVE_API="false", RUN_RELAY="false")
            elif service == "agent-runner":
                env["CONSUMER_CONCURRENCY"] = str(self.per_runner)
            if slot != "gateway":
                self.metrics[slot] = free_port()
                env["METRICS_PORT"] = str(self.metrics[slot])
            self.stack.names[slot] = f"{slot}-0"
            self.stack.children.start(slot, serve_argv(service), env)
        if not self.budget_only:
            self.stack.wait_for_gateway()
        client = sync_redis.Redis(port=self.stack.redis_port)
        deadline = time.monotonic() + 120
        try:  # every replica reading before the first build: a fair start for the spread
            while not self._all_reading(client):
                self.stack.alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("the consumers did not all start within 2 minutes")
                time.sleep(0.2)
        finally:
            client.close()

    def _all_reading(self, client: sync_redis.Redis) -> bool:
        groups = [(AGENT_WORK.name, "agent-runner"), (BUDGET_USAGE.name, "budget")]
        for stream, group in groups[1:] if self.budget_only else groups:
            try:
                consumers = client.xinfo_consumers(stream, group)
            except sync_redis.ResponseError:
                return False
            if len(consumers) < self.replicas:
                return False
        return True

    def pids(self) -> dict[str, int]:
        return {slot: self.stack.procs[slot].pid for slot in self.slots()}

    def cpu(self) -> dict[str, float]:
        out = {slot: cpu_s(pid) for slot, pid in self.pids().items()}
        out["redis"] = cpu_s(self.stack.procs["redis"].pid)
        out["postgresql"] = cpu_s(self.postmaster)
        out["model"] = cpu_s(self.model.process.pid)
        return out

    def handled(self, slot: str, stream: str) -> int:
        """Events of ``stream`` the process in ``slot`` handled (its Prometheus counter)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics[slot]}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("cofounder_events_handled") and f'stream="{stream}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)


async def submit(
    http: httpx.AsyncClient, founders: list[dict[str, Any]], builds: int, rate: float | None
) -> dict[str, float]:
    """POST ``builds`` builds, paced at ``rate`` per second (None: as fast as 16 at a time);
    build id -> the time its POST was sent."""
    sent: dict[str, float] = {}
    gate = asyncio.Semaphore(16)
    began = time.monotonic()

    async def one(n: int) -> None:
        if rate is not None:
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
        founder = founders[n % len(founders)]
        async with gate:
            at = time.time()
            reply = await http.post(
                f"/v1/projects/{founder['project_id']}/builds",
                json={},
                headers={"Authorization": f"Bearer {founder['token']}"},
            )
        if reply.status_code != 202:
            raise RuntimeError(f"POST builds: {reply.status_code} {reply.text}")
        sent[reply.json()["id"]] = at

    await asyncio.gather(*(one(n) for n in range(builds)))
    return sent


def _entries(client: sync_redis.Redis, stream: str, after: bytes) -> list[tuple[bytes, Any]]:
    return cast(
        list[tuple[bytes, Any]],
        client.xrange(stream, min=b"(" + after, count=5000)
        if after
        else client.xrange(stream, count=5000),
    )


def _build_of(fields: dict[bytes, bytes]) -> str | None:
    data = json.loads(fields[b"data"])
    build = data.get("build_id")
    return str(build) if build else None


def _ms(entry_id: bytes) -> float:
    return int(entry_id.split(b"-")[0]) / 1000


def run_round(rnd: Round, builds: int, rate: float | None) -> dict[str, Any]:
    """Start the round's stack, submit ``builds``, wait for every one to complete and every
    group to drain; figures of the round."""
    rnd.start()
    stack = rnd.stack
    client = sync_redis.Redis(port=stack.redis_port)
    try:
        with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
            founders = [http.post("/v1/admin/demo", headers=ADMIN).json() for _ in range(FOUNDERS)]
        rnd.model.reset()
        idle_before = rnd.cpu()
        time.sleep(IDLE_S)  # what each process spends doing nothing (polls, heartbeats)
        cpu_before = rnd.cpu()
        idle = {k: (cpu_before[k] - idle_before[k]) / IDLE_S for k in cpu_before}

        async def go() -> dict[str, float]:
            async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
                return await submit(http, founders, builds, rate)

        first_post = time.time()
        # Submission runs in a thread of its own so that following the builds starts at once.
        loop_result: dict[str, Any] = {}

        def submit_all() -> None:
            try:
                loop_result["sent"] = asyncio.run(go())
            except Exception as exc:  # raised again below, in the main thread
                loop_result["error"] = exc

        thread = threading.Thread(target=submit_all)
        thread.start()
        completed: dict[str, float] = {}
        context_ready: dict[str, float] = {}
        runner_of: dict[str, str] = {}  # agent work entry id -> consumer that first had it
        claimed: Counter[str] = Counter()
        seen_deliveries: dict[bytes, int] = {}
        last_events = b""
        last_work = b""
        deadline = time.monotonic() + 900
        while thread.is_alive() or len(completed) < builds:
            stack.alive()
            if "error" in loop_result:
                raise loop_result["error"]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{builds - len(completed)} builds did not complete in 15 min")
            for entry_id, fields in _entries(client, AGENT_WORK.name, last_work):
                last_work = entry_id
                build = _build_of(fields)
                if build:
                    context_ready.setdefault(build, _ms(entry_id))
            with contextlib.suppress(sync_redis.ResponseError):
                pending = cast(
                    list[dict[str, Any]],
                    client.xpending_range(AGENT_WORK.name, "agent-runner", "-", "+", 10_000),
                )
                for p in pending:
                    work_id, consumer = p["message_id"], p["consumer"].decode()
                    deliveries = int(p["times_delivered"])
                    if work_id not in runner_of:
                        runner_of[work_id] = consumer
                    if deliveries > seen_deliveries.get(work_id, 1):
                        claimed[consumer] += 1
                    seen_deliveries[work_id] = deliveries
            for entry_id, fields in _entries(client, BUILD_EVENTS.name, last_events):
                last_events = entry_id
                if fields[b"type"] == b"build.completed":
                    build = _build_of(fields)
                    if build:
                        completed.setdefault(build, _ms(entry_id))
                elif fields[b"type"] == b"build.failed":
                    raise RuntimeError(f"a build failed: {fields[b'data'][:500]!r}")
            time.sleep(0.3)
        thread.join()
        sent: dict[str, float] = loop_result["sent"]
        last_completed = max(completed.values())
        drain_deadline = time.monotonic() + 120
        while not at_rest(client):
            stack.alive()
            if time.monotonic() > drain_deadline:
                raise RuntimeError("the consumer groups did not drain within 2 minutes")
            time.sleep(0.2)
        cpu_after = rnd.cpu()
        rss = {slot: round(peak_rss_mib(pid), 1) for slot, pid in rnd.pids().items()}
        first_request: dict[str, float] = {}
        log = rnd.model.log()
        for call in log:
            build = call.get("build")
            if build in sent and "received_at" in call:
                first_request[build] = min(first_request.get(build, 1e18), call["received_at"])
        model_calls = sum(1 for e in log if e.get("build") in sent)
        budget_handled = {
            slot: rnd.handled(slot, BUDGET_USAGE.name)
            for slot in rnd.slots()
            if slot.startswith("budget")
        }
        runner_drove = Counter(runner_of.values())
        entries = {
            stream.name: client.xlen(stream.name)
            for stream in ALL_STREAMS
            if client.exists(stream.name)
        }
        infos = {
            c["name"].decode(): c for c in client.xinfo_consumers(AGENT_WORK.name, "agent-runner")
        }
    finally:
        client.close()
        stack.stop()
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
    missing = set(sent) - set(completed)
    if missing:
        raise RuntimeError(f"{len(missing)} builds never completed")
    to_ready = [(context_ready[b] - sent[b]) * 1000 for b in sent]
    to_model = [(first_request[b] - sent[b]) * 1000 for b in sent]
    to_done = [completed[b] - sent[b] for b in sent]
    wall = last_completed - first_post
    done_times = sorted(completed[b] for b in sent)
    span = done_times[-1] - done_times[0]
    by_service: dict[str, float] = {}
    for slot, seconds in cpu.items():
        service = slot.rstrip("0123456789")
        by_service[service] = by_service.get(service, 0.0) + seconds
    return {
        "builds": builds,
        "replicas": rnd.replicas,
        "per_runner": rnd.per_runner,
        "offered_builds_per_s": rate,
        "wall_s": round(wall, 2),
        "builds_per_s": round(builds / wall, 3),
        "completions_per_s": round((builds - 1) / span, 3) if span > 0 else None,
        "post_to_context_ready_ms": {
            "p50": round(pct(to_ready, 0.5), 1),
            "p99": round(pct(to_ready, 0.99), 1),
        },
        "post_to_first_model_request_ms": {
            "p50": round(pct(to_model, 0.5), 1),
            "p99": round(pct(to_model, 0.99), 1),
        },
        "build_s_mean": round(statistics.mean(completed[b] - context_ready[b] for b in sent), 2),
        "post_to_completed_s": {
            "p50": round(pct(to_done, 0.5), 2),
            "p99": round(pct(to_done, 0.99), 2),
        },
        "model_calls": model_calls,
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_ms_per_build": {k: round(v * 1000 / builds, 1) for k, v in by_service.items()},
        "cpu_share_of_a_core": {k: round(v / wall, 3) for k, v in by_service.items()},
        "idle_cpu_share_of_a_core": {k: round(v, 4) for k, v in idle.items()},
        "stream_entries_per_build": {k: round(v / builds, 2) for k, v in entries.items()},
        "peak_rss_mib": rss,
        "runners": {
            name: {
                "builds": runner_drove.get(name, 0),
                "claims": claimed.get(name, 0),
                "pending_at_end": int(info["pending"]),
            }
            for name, info in infos.items()
        },
        "budget_usage_handled": budget_handled,
    }


# --- part 3: the budget service on its own -----------------------------------------------------

USAGE_MODEL = "claude-sonnet-5-5"


def usage_backlog(events: int, turns: int) -> tuple[list[tuple[str, str]], list[BudgetUsage]]:
    """Founders (id, tier) and ``events`` usage events: builds of ``turns`` model calls of
    :data:`FOUNDERS` founders, in the order concurrent builds report them (every build's first
    call, then every build's second...), each under the id the runner derives for its call.
    Token counts as the generated transcript's: 150-600 output tokens, cache reads from the
    second call growing with the conversation (the same counts every round: a fixed seed)."""
    rng = random.Random(18)
    founders = [(new_event_id(), TIERS[n % len(TIERS)]) for n in range(FOUNDERS)]
    builds = [
        (new_event_id(), new_event_id(), founders[n % FOUNDERS][0])
        for n in range(-(-events // turns))
    ]
    out: list[BudgetUsage] = []
    for turn in range(turns):
        for build, project, user in builds:
            if len(out) == events:
                break
            out.append(
                BudgetUsage(
                    **envelope(
                        build_id=build,
                        project_id=project,
                        user_id=user,
                        producer="agent-runner",
                        kind=f"usage:{turn + 1}",
                    ),
                    model=USAGE_MODEL,
                    input_tokens=rng.randint(200, 800) if turn else 3000,
                    output_tokens=rng.randint(150, 600),
                    cache_creation_input_tokens=rng.randint(300, 900) if turn else 3000,
                    cache_read_input_tokens=3000 + 1200 * turn if turn else 0,
                    request_id=f"req_{rng.getrandbits(64):016x}",
                )
            )
    return founders, out


async def add_founders(url: str, founders: list[tuple[str, str]]) -> None:
    """The founders' ``users`` rows: the budget service reads each one's plan on its day's
    first usage event."""
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            "insert into users (id, email, tier, suspended, created_at)"
            " values ($1, $2, $3, false, now())",
            [(user, f"{user}@bench.example", tier) for user, tier in founders],
        )
    finally:
        await conn.close()


async def ledger_rows(url: str, events: list[BudgetUsage]) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "select count(*) from budget_ledger where event_id = any($1)",
                [e.event_id for e in events],
            )
        )
    finally:
        await conn.close()


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (``/proc/stat``: user, nice, system, irq,
    softirq), on all cores together."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / TICKS


def run_budget_round(rnd: Round, events: int, turns: int) -> dict[str, Any]:
    """Start ``rnd.replicas`` budget processes, stop them, publish the backlog, continue them
    together and time the drain; figures of the round."""
    founders, backlog = usage_backlog(events, turns)
    asyncio.run(add_founders(rnd.database_url, founders))
    rnd.start()
    stack = rnd.stack
    pids = list(rnd.pids().values())
    client = sync_redis.Redis(port=stack.redis_port)
    stopped = False
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        stopped = True
        last = b""
        for start in range(0, len(backlog), 1000):
            pipe = client.pipeline(transaction=False)
            for event in backlog[start : start + 1000]:
                fields: dict[Any, Any] = encode_fields(event)
                pipe.xadd(BUDGET_USAGE.name, fields, maxlen=BUDGET_USAGE.max_len, approximate=True)
            last = pipe.execute()[-1]
        time.sleep(0.5)  # Redis and PostgreSQL settle before the CPU is read
        cpu_before = rnd.cpu()
        busy_before = machine_busy_s()
        began = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        stopped = False
        deadline = began + 600
        while True:
            group = next(
                g for g in client.xinfo_groups(BUDGET_USAGE.name) if g["name"] == b"budget"
            )
            if not group["pending"] and group["last-delivered-id"] == last:
                break
            stack.alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the budget group did not drain within 10 minutes")
            time.sleep(0.05)
        wall = time.monotonic() - began
        cpu_after = rnd.cpu()
        busy = machine_busy_s() - busy_before
        handled = {slot: rnd.handled(slot, BUDGET_USAGE.name) for slot in rnd.slots()}
        dead = dead_letters(client)
        if dead:
            raise RuntimeError(f"usage events were dead-lettered: {str(dead)[:500]}")
    finally:
        if stopped:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        client.close()
        stack.stop()
    counted = asyncio.run(ledger_rows(rnd.database_url, backlog))
    if counted != events:
        raise RuntimeError(f"{counted} ledger rows for {events} usage events")
    cpu = {k: cpu_after[k] - cpu_before[k] for k in ("redis", "postgresql", *rnd.slots())}
    budgets = sum(cpu[slot] for slot in rnd.slots())
    total = budgets + cpu["redis"] + cpu["postgresql"]
    return {
        "events": events,
        "replicas": rnd.replicas,
        "wall_s": round(wall, 2),
        "events_per_s": round(events / wall, 1),
        "handled": handled,
        "spread": spread(list(handled.values())),
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_share_of_a_core": {k: round(v / wall, 3) for k, v in cpu.items()},
        "cpu_ms_per_event": {
            "budget": round(budgets * 1000 / events, 3),
            "redis": round(cpu["redis"] * 1000 / events, 3),
            "postgresql": round(cpu["postgresql"] * 1000 / events, 3),
        },
        "budget_redis_postgresql_cores": round(total / wall, 3),
        "machine_busy_cores": round(busy / wall, 3),
    }


def bottleneck(b: dict[str, Any]) -> str:
    """What limited a round, from its CPU: the machine's cores, one process's core, or neither
    (then the processes wait: on PostgreSQL's or Redis's round trips)."""
    cores = os.cpu_count() or 1
    share = b["cpu_share_of_a_core"]
    used = b["budget_redis_postgresql_cores"]
    busiest = max(share, key=lambda k: share[k])
    if b["machine_busy_cores"] >= 0.85 * cores:
        return (
            f"the machine's {cores} cores ({b['machine_busy_cores']} busy; the budget processes, "
            f"Redis and PostgreSQL {used})"
        )
    if share[busiest] >= 0.85:
        return f"one core: {busiest} at {share[busiest]} of a core"
    return f"not CPU ({b['machine_busy_cores']} of {cores} cores busy): round trips"


# --- the sizing table ---------------------------------------------------------------------------

#: The deployment that reads each consumer group's entries (the gateway's group: the projection).
DEPLOYMENT_OF_GROUP = {
    "gateway": "gateway-projection",
    "context-assembler": "context-assembler",
    "agent-runner": "agent-runner",
    "budget": "budget",
    "snapshot": "snapshot",
}
TARGET_CPU = 0.7  # of a core: the HPA's target utilisation, and the sizing's


def two_figures(x: float) -> int:
    """``x`` rounded down to two significant figures (a threshold, not a measurement)."""
    if x < 10:
        return max(1, int(x))
    scale = int(10 ** (len(str(int(x))) - 2))
    return int(x) // scale * scale


def sizing(p: dict[str, Any]) -> dict[str, Any]:
    """What one process of each deployment carries at 70 % of a core, from part 1's per-build
    CPU above each process's idle cost, and the KEDA thresholds that follow: a runner's pending
    entries are its running builds (threshold: the builds one runner carries); a lag threshold
    is one second of one replica's work (the events it handles per second)."""
    builds = p["builds"]
    wall = p["wall_s"]
    out: dict[str, Any] = {}
    for service in ("gateway", "gateway-projection", "context-assembler", "budget", "snapshot"):
        slot = "budget1" if service == "budget" else service
        idle = p["idle_cpu_share_of_a_core"][slot]
        busy = max(1e-6, p["cpu_s"][slot] - idle * wall) / builds  # CPU s per build
        reads = {
            stream.name: p["stream_entries_per_build"].get(stream.name, 0.0)
            for stream in ALL_STREAMS
            for group in stream.groups
            if DEPLOYMENT_OF_GROUP.get(group) == service
        }
        per_s = (TARGET_CPU - idle) / busy  # builds per second at 70 %
        out[service] = {
            "cpu_ms_per_build": round(busy * 1000, 2),
            "idle_share_of_a_core": idle,
            "events_per_build": round(sum(reads.values()), 2),
            "builds_per_s_at_70pct": round(per_s, 1),
            "events_per_s_at_70pct": round(per_s * sum(reads.values()), 1),
            "lag_thresholds": {k: two_figures(per_s * v) for k, v in reads.items() if v},
        }
    runner_idle = p["idle_cpu_share_of_a_core"]["agent-runner1"]
    per_call = max(1e-6, p["cpu_s"]["agent-runner1"] - runner_idle * wall) / p["model_calls"]
    seconds_per_call = p["build_s_mean"] / (p["model_calls"] / builds)
    calls_per_s = (TARGET_CPU - runner_idle) / per_call
    out["agent-runner"] = {
        "cpu_ms_per_model_call": round(per_call * 1000, 2),
        "seconds_per_model_call": round(seconds_per_call, 2),
        "model_calls_per_s_at_70pct": round(calls_per_s, 1),
        "running_builds_at_70pct": round(calls_per_s * seconds_per_call, 1),
        "pending_threshold": two_figures(calls_per_s * seconds_per_call),
        "lag_threshold": two_figures(calls_per_s / (p["model_calls"] / builds)),
    }
    return out


# --- the benchmark ------------------------------------------------------------------------------


def spread(counts: list[int]) -> float:
    """max / mean of the per-replica counts (1.0: perfectly even)."""
    mean = statistics.mean(counts)
    return round(max(counts) / mean, 3) if mean else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=1000.0)
    parser.add_argument("--turns", type=int, default=None, help="model calls per build")
    parser.add_argument("--rate", type=float, default=None, help="builds/s offered (part 1)")
    parser.add_argument("--per-runner", type=int, default=None, help="builds per runner (part 2)")
    parser.add_argument("--waves", type=int, default=None, help="builds per runner slot (part 2)")
    parser.add_argument("--isolation", choices=("unsafe-none", "namespaces"), default="unsafe-none")
    parser.add_argument("--usage-events", type=int, default=None, help="backlog (part 3)")
    parser.add_argument("--scale-only", action="store_true", help="part 2 only")
    parser.add_argument("--budget-only", action="store_true", help="part 3 only")
    args = parser.parse_args()
    if args.scale_only and args.budget_only:
        parser.error("--scale-only and --budget-only: one part or the other")
    turns = args.turns or (8 if args.quick else 12)
    rate = args.rate or (1.0 if args.quick else 2.0)
    per_runner = args.per_runner or (5 if args.quick else 8)
    waves = args.waves or (2 if args.quick else 3)
    part1_builds = int(rate * (25 if args.quick else 45))
    usage_events = args.usage_events or (4000 if args.quick else 12000)
    load = os.getloadavg()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; model latency {args.latency_ms:g} ms, "
        f"{turns} model calls per build, sandboxes {args.isolation}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # PostgreSQL's user must reach its data directory
        data = workdir / "pg"
        with (
            local_postgres(data, port=free_port(), durable=False, log=workdir / "pg.log") as url,
            model_server(turns, args.latency_ms, workdir) as model,
        ):
            upgrade(url)
            postmaster = int((data / "postmaster.pid").read_text().split()[0])

            def make(name: str, replicas: int, per: int, budget_only: bool = False) -> Round:
                root = workdir / name
                root.mkdir()
                return Round(
                    root, url, postmaster, model, replicas, per, args.isolation, budget_only
                )

            pipeline: dict[str, Any] | None = None
            sized: dict[str, Any] | None = None
            if not (args.scale_only or args.budget_only):
                pipeline = run_round(make("pipeline", 1, 100), part1_builds, rate)
                report_pipeline(pipeline)
                sized = sizing(pipeline)
                report_sizing(sized)
            scale: dict[int, dict[str, Any]] = {}
            for replicas in () if args.budget_only else (1, 2, 4):
                scale[replicas] = run_round(
                    make(f"scale{replicas}", replicas, per_runner),
                    replicas * per_runner * waves,
                    None,
                )
                report_scale(scale[replicas], scale[1])
            budget: dict[int, dict[str, Any]] = {}
            for replicas in () if args.scale_only else (1, 2, 4):
                budget[replicas] = run_budget_round(
                    make(f"budget{replicas}", replicas, 0, budget_only=True), usage_events, turns
                )
                report_budget(budget[replicas], budget[1])
    ratio2 = ratio4 = budget2 = budget4 = None
    if scale:
        ratio4 = scale[4]["builds_per_s"] / scale[1]["builds_per_s"]
        ratio2 = scale[2]["builds_per_s"] / scale[1]["builds_per_s"]
        print(
            f"scale-out: 2 runners {ratio2:.2f}x one, 4 runners {ratio4:.2f}x one (target >= "
            f"{TARGET_SCALE_4}x): {'met' if ratio4 >= TARGET_SCALE_4 else 'NOT met'}"
        )
    if budget:
        budget2 = budget[2]["events_per_s"] / budget[1]["events_per_s"]
        budget4 = budget[4]["events_per_s"] / budget[1]["events_per_s"]
        print(
            f"budget service alone: 2 processes {budget2:.2f}x one, 4 processes {budget4:.2f}x "
            f"one; at 4, bottleneck: {bottleneck(budget[4])}"
        )
    ideal = turns * args.latency_ms / 1000
    print(
        json.dumps(
            {
                "benchmark": "pipeline",
                "quick": args.quick,
                "loadavg_at_start": [round(x, 2) for x in load],
                "cores": os.cpu_count(),
                "latency_ms": args.latency_ms,
                "turns": turns,
                "isolation": args.isolation,
                "ideal_build_s": ideal,
                "pipeline": pipeline,
                "sizing": sized,
                "scale": {str(k): v for k, v in scale.items()} or None,
                "scale_ratio_2": None if ratio2 is None else round(ratio2, 3),
                "scale_ratio_4": None if ratio4 is None else round(ratio4, 3),
                "budget_scale": {str(k): v for k, v in budget.items()} or None,
                "budget_scale_ratio_2": None if budget2 is None else round(budget2, 3),
                "budget_scale_ratio_4": None if budget4 is None else round(budget4, 3),
                "targets_met": {
                    "four_runners_at_least_3_4x": None
                    if ratio4 is None
                    else ratio4 >= TARGET_SCALE_4
                },
            }
        )
    )


def report_pipeline(p: dict[str, Any]) -> None:
    print(
        f"\n1. pipeline, one process each: {p['builds']} builds offered at "
        f"{p['offered_builds_per_s']}/s, completed at {p['completions_per_s']}/s "
        f"({p['model_calls']} model calls)"
    )
    for key, label in (
        ("post_to_context_ready_ms", "POST -> context.ready (ms)"),
        ("post_to_first_model_request_ms", "POST -> first model request (ms)"),
        ("post_to_completed_s", "POST -> build.completed (s)"),
    ):
        print(f"   {label}: p50 {p[key]['p50']}, p99 {p[key]['p99']}")
    print("   | process | CPU ms per build | share of a core | peak RSS MiB |")
    print("   | --- | ---: | ---: | ---: |")
    for service, ms in p["cpu_ms_per_build"].items():
        rss = max(
            (v for k, v in p["peak_rss_mib"].items() if k.rstrip("0123456789") == service),
            default=None,
        )
        share = p["cpu_share_of_a_core"][service]
        print(f"   | {service} | {ms} | {share} | {'-' if rss is None else rss} |")


def report_sizing(sized: dict[str, Any]) -> None:
    r = sized["agent-runner"]
    print(
        f"   sizing, agent-runner: {r['cpu_ms_per_model_call']} ms CPU per model call, "
        f"{r['seconds_per_model_call']} s per call: {r['running_builds_at_70pct']} running "
        f"builds at 70 % of a core (pending threshold {r['pending_threshold']}, lag "
        f"threshold {r['lag_threshold']})"
    )
    for service, v in sized.items():
        if service != "agent-runner":
            print(
                f"   sizing, {service}: {v['cpu_ms_per_build']} ms CPU per build above idle, "
                f"{v['events_per_build']} events read per build: {v['builds_per_s_at_70pct']} "
                f"builds/s at 70 % of a core (lag thresholds {v['lag_thresholds']})"
            )


def report_scale(s: dict[str, Any], one: dict[str, Any]) -> None:
    runners = s["runners"]
    budgets = s["budget_usage_handled"]
    print(
        f"\n2. {s['replicas']} runner(s) x {s['per_runner']} builds, {s['replicas']} budget(s): "
        f"{s['builds']} builds in {s['wall_s']} s = {s['builds_per_s']} builds/s "
        f"({s['builds_per_s'] / one['builds_per_s']:.2f}x one); POST -> completed p50 "
        f"{s['post_to_completed_s']['p50']} s"
    )
    print(
        "   runners (builds driven / claims): "
        + ", ".join(f"{n} {r['builds']}/{r['claims']}" for n, r in sorted(runners.items()))
        + f"; spread max/mean {spread([r['builds'] for r in runners.values()])}"
    )
    print(
        "   budget usage events handled: "
        + ", ".join(f"{n} {c}" for n, c in sorted(budgets.items()))
        + f"; spread max/mean {spread(list(budgets.values()))}"
    )
    print(
        "   CPU share of a core: "
        + ", ".join(f"{k} {v}" for k, v in s["cpu_share_of_a_core"].items())
    )


def report_budget(b: dict[str, Any], one: dict[str, Any]) -> None:
    share = b["cpu_share_of_a_core"]
    per = b["cpu_ms_per_event"]
    print(
        f"\n3. {b['replicas']} budget process(es) alone: {b['events']} usage events drained in "
        f"{b['wall_s']} s = {b['events_per_s']} events/s "
        f"({b['events_per_s'] / one['events_per_s']:.2f}x one)"
    )
    print(
        "   usage events handled: "
        + ", ".join(f"{n} {c}" for n, c in sorted(b["handled"].items()))
        + f"; spread max/mean {b['spread']}"
    )
    print("   CPU share of a core: " + ", ".join(f"{k} {v}" for k, v in share.items()))
    print(
        f"   CPU ms per event: budget {per['budget']}, redis {per['redis']}, postgresql "
        f"{per['postgresql']}; budget + redis + postgresql {b['budget_redis_postgresql_cores']}"
        f" cores, the machine {b['machine_busy_cores']} of {os.cpu_count()} busy"
    )
    print(f"   bottleneck: {bottleneck(b)}")


if __name__ == "__main__":
    main()
