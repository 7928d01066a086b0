"""Gateway benchmark: POST a build through our gateway against two references, one uvicorn worker.

    uv run python benchmarks/gateway.py            # needs wrk (Debian: apt-get install wrk)
    uv run python benchmarks/gateway.py --quick

(a) bare: a FastAPI route that writes nothing;
(b) lean: the same writes as ours (the build row and its outbox row in one transaction) with raw
    asyncpg, plus one ``XADD``; no auth, no validation;
(c) ours: ``POST /v1/projects/{id}/builds`` of the real gateway process (JWT auth, validation,
    ownership and tier-limit checks, the ORM, the outbox; its relay publishes in the background).

Each runs as its own single uvicorn process on PostgreSQL (a fresh database each, migrated and
seeded with the same founders) and Redis.
Throughput: wrk, one thread, 64 connections, requests spread over 200 users with a project each;
the run fails on any non-2xx answer. Latency: an open-loop paced client at half of (c)'s maximum
rate, timing each request from its scheduled send. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from cofounder_db.migrate import upgrade
from cofounder_gateway.auth import mint_token
from cofounder_gateway.settings import DEV_SECRET
from cofounder_testing.databases import empty_database
from cofounder_testing.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
SERVER_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + "/11"
USERS = 200
TARGET_VS_LEAN = 0.70
TARGET_P99_MS = 50.0


def people() -> list[dict[str, str]]:
    """The benchmark's founders: a user, a project and a token each."""
    out = [{"user": str(uuid.uuid4()), "project": str(uuid.uuid4())} for _ in range(USERS)]
    for p in out:
        p["token"] = mint_token(DEV_SECRET, p["user"], ttl_s=3600)
    return out


@contextmanager
def fresh_database(founders: list[dict[str, str]]) -> Iterator[str]:
    """An empty, migrated database holding ``founders``: every route starts from the same
    state (our route counts the user's active builds, so rows another route left would be work
    that only ours does)."""
    with empty_database(SERVER_URL) as url:
        upgrade(url)
        asyncio.run(seed(url, founders))
        yield url


async def seed(url: str, people: list[dict[str, str]]) -> None:
    conn = await asyncpg.connect(url)
    now = datetime.now(UTC)
    await conn.executemany(
        "insert into users (id, email, tier, suspended, created_at) values ($1, $2, 'bench',"
        " false, $3)",
        [(p["user"], f"{p['user']}@bench.io", now) for p in people],
    )
    await conn.executemany(
        "insert into projects (id, owner_id, name, stage, created_at, updated_at) values"
        " ($1, $2, 'bench', 'understanding', $3, $3)",
        [(p["project"], p["user"], now) for p in people],
    )
    await conn.close()


@contextmanager
def server(argv: list[str], env: dict[str, str], port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        argv,
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"server did not start: {argv}") from None
            time.sleep(0.1)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wrk_script(people: list[dict[str, str]], path: str) -> str:
    rows = ",\n".join(
        f'  {{"{path.format(project=p["project"])}", "Bearer {p["token"]}", "{p["user"]}"}}'
        for p in people
    )
    return f"""
local people = {{
{rows}
}}
local i = 0
request = function()
  i = i + 1
  local p = people[(i % #people) + 1]
  return wrk.format("POST", p[1], {{["Authorization"] = p[2], ["X-User"] = p[3],
    ["Content-Type"] = "application/json"}}, '{{"goal": "Build the MVP"}}')
end
"""


def run_wrk(base: str, script: str, seconds: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t1", "-c64", f"-d{seconds}s", "-s", f.name, base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx answers under load:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return float(match.group(1))


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    path: str,
    token: str,
    user: str,
) -> int:
    body = b'{"goal": "Build the MVP"}'
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"X-User: {user}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def paced(
    base: str,
    people: list[dict[str, str]],
    path: str,
    rate: float,
    seconds: float,
    *,
    connections: int = 64,
) -> dict[str, float]:
    """Open-loop load at ``rate`` over keep-alive connections (a minimal HTTP/1.1 client: an
    off-the-shelf async client was itself the bottleneck here). Each request is timed from its
    scheduled send, so a server that falls behind shows it as latency."""
    host, port = base.removeprefix("http://").split(":")
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    next_index = 0
    start = time.perf_counter() + 0.5

    async def worker() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection(host, int(port))
        while next_index < n:
            i = next_index
            next_index += 1
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            p = people[i % len(people)]
            status = await _request(
                reader, writer, host, path.format(project=p["project"]), p["token"], p["user"]
            )
            if status != 202:
                errors += 1
            latencies.append((time.perf_counter() - scheduled) * 1000)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "errors": errors,
        "rate": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    seconds = 5 if args.quick else 15
    founders = people()
    env = {
        # Development's published secrets: a gateway with ENVIRONMENT unset refuses to start.
        "ENVIRONMENT": "development",
        "REDIS_URL": REDIS_URL,
        "LOG_LEVEL": "WARNING",
        "TIER_MAX_CONCURRENT_BUILDS": json.dumps({"bench": 10**9}),
    }
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.gateway_reference:app",
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    results: dict[str, Any] = {}
    for name, path in (("bare", "/bare/{project}"), ("lean", "/lean/{project}")):
        port = free_port()
        with (
            fresh_database(founders) as url,
            server([*uvicorn, "--port", str(port)], {**env, "DATABASE_URL": url}, port) as base,
        ):
            results[name] = run_wrk(base, wrk_script(founders, path), seconds)
        print(f"# {name:<5} {results[name]:>9,.0f} requests/s", flush=True)
    port = free_port()
    ours_path = "/v1/projects/{project}/builds"
    cofounder = [sys.executable, "-m", "cofounder_cli", "serve", "gateway"]
    with fresh_database(founders) as url:
        # The API process as deployed when scaled: the projection consumers run elsewhere
        # (RUN_PROJECTION=false); the outbox relay stays, as it is part of the write path.
        api_env = {
            **env,
            "DATABASE_URL": url,
            "PORT": str(port),
            "RUN_PROJECTION": "false",
            **json.loads(os.environ.get("BENCH_EXTRA_ENV", "{}")),
        }
        with server(cofounder, api_env, port) as base:
            results["ours"] = run_wrk(base, wrk_script(founders, ours_path), seconds)
            print(f"# ours  {results['ours']:>9,.0f} requests/s", flush=True)
            latency = asyncio.run(paced(base, founders, ours_path, results["ours"] / 2, seconds))
    ratio = results["ours"] / results["lean"]
    print()
    print("| route (one uvicorn worker) | requests/s | vs lean |")
    print("| --- | ---: | ---: |")
    print(
        f"| (a) bare FastAPI route, no writes | {results['bare']:,.0f} | "
        f"{results['bare'] / results['lean']:.0%} |"
    )
    print(f"| (b) lean: raw asyncpg + one XADD | {results['lean']:,.0f} | 100% |")
    print(f"| (c) ours: POST /v1/projects/{{id}}/builds | {results['ours']:,.0f} | {ratio:.0%} |")
    print()
    print(
        f"ours / lean = {ratio:.2f} (target >= {TARGET_VS_LEAN}): "
        f"{'met' if ratio >= TARGET_VS_LEAN else 'NOT met'}"
    )
    print(
        f"ours at {latency['rate']:,.0f} requests/s (half its max): p50 "
        f"{latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms "
        f"(target p99 <= {TARGET_P99_MS} ms): "
        f"{'met' if latency['p99_ms'] <= TARGET_P99_MS else 'NOT met'}; "
        f"errors {latency['errors']}"
    )
    print(
        json.dumps(
            {
                "bare_rps": round(results["bare"]),
                "lean_rps": round(results["lean"]),
                "ours_rps": round(results["ours"]),
                "ours_vs_lean": round(ratio, 3),
                "ours_p50_ms": round(latency["p50_ms"], 2),
                "ours_p99_ms": round(latency["p99_ms"], 2),
                "paced_rate": round(latency["rate"]),
                "quick": args.quick,
            }
        )
    )


if __name__ == "__main__":
    main()
