"""Snapshot benchmark: content-addressed sync against a naive upload-everything, on one S3 server.

    uv run python benchmarks/snapshot.py            # 2,000 files, ~50 MB
    uv run python benchmarks/snapshot.py --quick    # 500 files, ~12 MB

Both write to moto's S3 server over HTTP (``S3_ENDPOINT_URL`` to use another S3 API), with the
same transfer concurrency (16):

- ours: ``cofounder_snapshots`` (collect with hashes, read the project's index once, upload the
  blobs it lacks, the index, the manifest);
- naive: every file ``PUT`` under a per-snapshot prefix, every time.

Three rounds on a generated workspace (random, incompressible bytes; a few files above the
multipart threshold): the first sync, a resync with nothing changed, a resync after 10 files
changed. Reported: wall time and bytes sent per round. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aioboto3

from cofounder_snapshots.collect import collect_folder
from cofounder_snapshots.store import S3Store
from cofounder_snapshots.sync import take_snapshot
from cofounder_testing.servers import s3_server

CONCURRENCY = 16


def generate(root: Path, files: int, total_bytes: int, rng: random.Random) -> None:
    big = max(1, files // 200)
    big_size = 1_200_000
    small = (total_bytes - big * big_size) // (files - big)
    for i in range(files):
        size = big_size if i < big else max(100, int(small * rng.uniform(0.5, 1.5)))
        path = root / f"src/pkg_{i % 40:02d}/module_{i:04d}.ts"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


def change(root: Path, count: int, rng: random.Random) -> None:
    files = sorted(root.rglob("*.ts"))
    for path in rng.sample(files, count):
        path.write_bytes(rng.randbytes(path.stat().st_size))


async def naive(client: Any, bucket: str, root: Path, label: str) -> tuple[float, int]:
    started = time.perf_counter()
    gate = asyncio.Semaphore(CONCURRENCY)
    sent = 0

    async def put(path: Path) -> None:
        nonlocal sent
        data = await asyncio.to_thread(path.read_bytes)
        async with gate:
            await client.put_object(
                Bucket=bucket, Key=f"naive/{label}/{path.relative_to(root)}", Body=data
            )
        sent += len(data)

    async with asyncio.TaskGroup() as group:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):  # noqa: ASYNC240 - a listing, once per round
            group.create_task(put(path))
    return time.perf_counter() - started, sent


async def ours(store: S3Store, root: Path, project: str, build: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    collected = await collect_folder(root)
    result = await take_snapshot(
        store, collected, project_id=project, build_id=build, concurrency=CONCURRENCY
    )
    return time.perf_counter() - started, result.bytes_uploaded, result.blobs_uploaded


async def run(endpoint: str, files: int, total: int) -> dict[str, Any]:
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    rng = random.Random(7)
    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as client:
        await client.create_bucket(Bucket=bucket)
        async with S3Store(bucket, endpoint_url=endpoint) as store:
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                generate(root, files, total, rng)
                size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())  # noqa: ASYNC240
                print(f"workspace: {files} files, {size / 1e6:.1f} MB", flush=True)
                project, build = str(uuid.uuid4()), str(uuid.uuid4())
                rounds: dict[str, Any] = {}
                for label in ("first", "unchanged", "10_changed"):
                    if label == "10_changed":
                        change(root, 10, rng)
                    o_time, o_bytes, o_blobs = await ours(store, root, project, build)
                    n_time, n_bytes = await naive(client, bucket, root, label)
                    rounds[label] = {
                        "ours_s": round(o_time, 3),
                        "ours_bytes": o_bytes,
                        "ours_blobs": o_blobs,
                        "naive_s": round(n_time, 3),
                        "naive_bytes": n_bytes,
                        "speedup": round(n_time / o_time, 2),
                    }
                    print(
                        f"{label:<11} ours {o_time:6.2f} s, {o_bytes / 1e6:7.2f} MB "
                        f"({o_blobs} blobs) | naive {n_time:6.2f} s, {n_bytes / 1e6:7.2f} MB | "
                        f"{n_time / o_time:5.1f}x faster",
                        flush=True,
                    )
    return {"files": files, "bytes": size, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    files, total = (500, 12_500_000) if args.quick else (2_000, 50_000_000)
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)
    with s3_server() as endpoint:
        result = asyncio.run(run(endpoint, files, total))
    print(json.dumps({"benchmark": "snapshot", "quick": args.quick, **result}))


if __name__ == "__main__":
    main()
