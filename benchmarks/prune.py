"""Pruning ``processed_events`` at scale: does a batch still cost only the rows it takes?

    uv run python benchmarks/prune.py            # 3,000,000 rows (about two minutes)
    uv run python benchmarks/prune.py --quick    # 300,000 rows

Every consumer records each event it applied in ``processed_events`` (``record_once``), so the
table grows with the traffic, and the gateway's pruner deletes rows past the retention in
batches (``cofounder_runtime.retention``). At 30k rows the planner found each batch's rows with a
hash join over a sequential scan; this checks the plan and the cost where it matters.

Real PostgreSQL, a fresh database, migrated. The table is filled with ``generate_series``: seven
scopes, one row a second over 30 days, so about three quarters are past a 7-day retention.

1. The plan of one batch (1,000 rows), ``EXPLAIN (ANALYZE, BUFFERS)``: it must find its rows on
   the ``processed_at`` index and delete them by primary key (no sequential scan).
2. The pruner, timed: every old row deleted, 1,000 a transaction; milliseconds per batch.
3. Reference, in the same run: the same, on a table ten times smaller (a fresh database).
   A batch that finds its rows on the index costs the same on both; one that scans grows with
   the table. For scale, also one bulk ``DELETE ... WHERE processed_at < cutoff`` of the big
   table's old rows (made again): what a single statement costs, which the pruner avoids because
   it would lock every old row in one transaction while consumers write.

Target: no sequential scan in the big table's batch plan (a small table may be scanned: the
planner's right choice there), and a batch on the big table within 2x of one on the small.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cofounder_db.engine import create_engine
from cofounder_db.migrate import upgrade
from cofounder_runtime.retention import prune_batch, prune_processed_events
from cofounder_testing.databases import empty_database

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
RETENTION = timedelta(days=7)
BATCH = 1_000
TARGET_RATIO = 2.0

_FILL = """
insert into processed_events (scope, event_id, processed_at, digest)
select 'scope-' || (g % 7), md5(g::text)::uuid::text,
       now() - interval '30 days' + g * (interval '30 days' / :rows), md5(g::text)
from generate_series(1, :rows) g
"""


async def _fill(engine: AsyncEngine, rows: int) -> float:
    began = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(text(_FILL), {"rows": rows})
    async with engine.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
            text("vacuum analyze processed_events")
        )
    return time.perf_counter() - began


async def _plan(engine: AsyncEngine) -> list[str]:
    statement = prune_batch(datetime.now(UTC) - RETENTION, BATCH)
    sql = str(statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    async with engine.begin() as conn:
        lines = (await conn.execute(text("explain (analyze, buffers) " + sql))).scalars().all()
        await conn.rollback()  # EXPLAIN ANALYZE deleted them: put them back
    return [str(line) for line in lines]


async def _old_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("select count(*) from processed_events where processed_at < :cutoff"),
            {"cutoff": datetime.now(UTC) - RETENTION},
        )
        return int(found.scalar_one())


async def _bulk_delete(engine: AsyncEngine) -> tuple[int, float]:
    began = time.perf_counter()
    async with engine.begin() as conn:
        deleted = await conn.execute(
            text("delete from processed_events where processed_at < :cutoff"),
            {"cutoff": datetime.now(UTC) - RETENTION},
        )
    return deleted.rowcount, time.perf_counter() - began


async def prune_at(database_url: str, rows: int, *, bulk: bool) -> dict[str, Any]:
    """Fill a table of ``rows``, show one batch's plan, prune it; with ``bulk``, fill it again
    and delete its old rows in one statement."""
    engine = create_engine(database_url)
    try:
        fill_s = await _fill(engine, rows)
        old = await _old_rows(engine)
        print(f"{rows:,} rows in {fill_s:.1f} s; {old:,} past the {RETENTION.days}-day retention")
        plan = await _plan(engine)
        print("one batch's plan:\n  " + "\n  ".join(plan))
        began = time.perf_counter()
        pruned = await prune_processed_events(engine, older_than=RETENTION, batch=BATCH)
        pruner_s = time.perf_counter() - began
        ms_per_batch = pruner_s / pruned.batches * 1000
        print(
            f"pruner: {pruned.rows:,} rows in {pruned.batches:,} batches, {pruner_s:.1f} s "
            f"({ms_per_batch:.2f} ms per batch)"
        )
        out: dict[str, Any] = {
            "rows": rows,
            "old_rows": old,
            "pruned": pruned.rows,
            "batches": pruned.batches,
            "pruner_s": round(pruner_s, 2),
            "ms_per_batch": round(ms_per_batch, 2),
            "plan_has_seq_scan": any("Seq Scan" in line for line in plan),
        }
        if bulk:
            async with engine.begin() as conn:
                await conn.execute(text("truncate processed_events"))
            await _fill(engine, rows)
            bulk_rows, bulk_s = await _bulk_delete(engine)
            print(f"for scale, one bulk DELETE: {bulk_rows:,} rows in {bulk_s:.2f} s")
            out |= {"bulk_rows": bulk_rows, "bulk_s": round(bulk_s, 3)}
        return out
    finally:
        await engine.dispose()


def _measured(rows: int, *, bulk: bool) -> dict[str, Any]:
    with empty_database(DATABASE_URL) as url:
        upgrade(url)
        return asyncio.run(prune_at(url, rows, bulk=bulk))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="300,000 rows instead of 3,000,000")
    args = parser.parse_args()
    rows = 300_000 if args.quick else 3_000_000
    small = _measured(rows // 10, bulk=False)
    big = _measured(rows, bulk=True)
    ratio = big["ms_per_batch"] / small["ms_per_batch"]
    print(
        f"a batch at {rows:,} rows / at {rows // 10:,} rows: {ratio:.2f}x "
        f"(target <= {TARGET_RATIO:g}x)"
    )
    targets = {
        "no_seq_scan": not big["plan_has_seq_scan"],
        "all_old_rows_pruned": big["pruned"] >= big["old_rows"],  # the cutoff moves on
        "batch_cost_flat": ratio <= TARGET_RATIO,
    }
    print(
        json.dumps(
            {
                "benchmark": "prune",
                "quick": args.quick,
                "small": small,
                "big": big,
                "big_vs_small_per_batch": round(ratio, 2),
                "targets_met": targets,
            }
        )
    )


if __name__ == "__main__":
    main()
