"""Snapshots against moto's S3 server over HTTP (and the local folder store): what is uploaded,
what is left out, restores byte for byte, retention, and an unreachable S3."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aioboto3
import pytest
from typer.testing import CliRunner

from cofounder_cli.main import app
from cofounder_sandbox.local import LocalSandbox, LocalSandboxes
from cofounder_snapshots.collect import collect_folder, collect_sandbox
from cofounder_snapshots.ignore import IgnoreRules
from cofounder_snapshots.store import LocalStore, S3Store, SnapshotStore, StoreError, blob_key
from cofounder_snapshots.sync import SnapshotResult, prune, restore, take_snapshot

PROJECT = "0195a0e2-0000-7000-8000-00000000a001"


def test_ignore_rules() -> None:
    rules = IgnoreRules()
    assert rules.ignored("node_modules", is_dir=True)
    assert rules.ignored("web/node_modules", is_dir=True)
    assert rules.ignored(".env")
    assert rules.ignored("config/.env.production")
    assert rules.ignored("keys/server.pem")
    assert not rules.ignored("src/app.py")
    assert not rules.ignored("build.py")  # "build/" matches folders only
    more = rules.with_file("# comment\n*.log\n/data/\ndocs/private/*.md\n!.env\n")
    assert more.ignored("server.log")
    assert more.ignored("data", is_dir=True)
    assert not more.ignored("src/data", is_dir=True)  # anchored at the root
    assert more.ignored("docs/private/notes.md")
    assert more.ignored(".env")  # negation is not supported: secrets stay out


@pytest.fixture
async def s3(s3_endpoint_url: str) -> AsyncIterator[S3Store]:
    bucket = f"snapshots-{uuid.uuid4().hex[:12]}"
    async with aioboto3.Session().client("s3", endpoint_url=s3_endpoint_url) as client:
        await client.create_bucket(Bucket=bucket)
    async with S3Store(bucket, prefix="test", endpoint_url=s3_endpoint_url) as store:
        yield store


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def _sync_twice(store: SnapshotStore, tmp_path: Path) -> None:
    root = tmp_path / "project"
    source = {f"src/module_{i}.py": f"print({i})\n".encode() * (i + 1) for i in range(20)}
    source["README.md"] = b"# Plantr\n"
    source["bin/run.sh"] = b"#!/bin/sh\necho run\n"
    _tree(root, source)
    (root / "bin/run.sh").chmod(0o755)
    _tree(
        root,
        {
            "node_modules/left/index.js": b"x",
            ".env": b"SECRET=1",
            ".git/HEAD": b"ref",
            "big.bin": b"0" * 5000,
        },
    )
    build = str(uuid.uuid4())

    first = await take_snapshot(
        store, await collect_folder(root, max_file_bytes=4096), project_id=PROJECT, build_id=build
    )
    assert first.version == 1
    assert first.files == 22
    assert first.blobs_uploaded == 22
    assert first.bytes_uploaded == sum(len(v) for v in source.values())
    assert first.too_large == {"big.bin": 5000}  # reported, not silently dropped

    # Three files change, one is deleted, one is added with the bytes of another (deduplicated).
    _tree(
        root,
        {
            "src/module_0.py": b"changed 0\n",
            "src/module_1.py": b"changed 1\n",
            "README.md": b"# Plantr v2\n",
        },
    )
    (root / "src/module_19.py").unlink()
    _tree(root, {"src/copy.py": source["src/module_5.py"]})
    second = await take_snapshot(
        store, await collect_folder(root, max_file_bytes=4096), project_id=PROJECT, build_id=build
    )
    assert second.version == 2
    assert second.blobs_uploaded == 3
    assert second.files == 22
    assert await store.versions(PROJECT, build) == [1, 2]

    # Restore into a new, empty sandbox: the tree byte for byte (what was left out stays out).
    sandboxes = LocalSandboxes(tmp_path / "sandboxes", isolation="unsafe-none")
    fresh = await sandboxes.create(build_id=build, metadata={})
    manifest = await restore(store, fresh, project_id=PROJECT, build_id=build)
    assert manifest is not None
    assert manifest.version == 2
    expected = {
        k: v
        for k, v in _files(root).items()
        if not k.startswith(("node_modules", ".git")) and k not in (".env", "big.bin")
    }
    assert _files(fresh.workspace) == expected
    assert (fresh.workspace / "bin/run.sh").stat().st_mode & 0o111
    old = await sandboxes.create(build_id=build, metadata={})
    await restore(store, old, project_id=PROJECT, build_id=build, version=1)
    assert (old.workspace / "src/module_19.py").exists()
    assert _files(old.workspace)["README.md"] == b"# Plantr\n"

    # Retention: keep the last version; blobs only version 1 used are collected.
    deleted_manifests, deleted_blobs = await prune(
        store, project_id=PROJECT, build_id=build, keep=1
    )
    assert (deleted_manifests, deleted_blobs) == (1, 4)  # 3 changed + 1 deleted file's old bytes
    assert await store.versions(PROJECT, build) == [2]
    again = await sandboxes.create(build_id=build, metadata={})
    await restore(store, again, project_id=PROJECT, build_id=build)
    assert _files(again.workspace) == expected


@pytest.mark.integration
async def test_s3_snapshots_upload_only_what_changed_and_restore_exactly(
    s3: S3Store, tmp_path: Path
) -> None:
    await _sync_twice(s3, tmp_path)


async def test_the_folder_store_behaves_the_same(tmp_path: Path) -> None:
    await _sync_twice(LocalStore(tmp_path / "store"), tmp_path)


@pytest.mark.integration
async def test_the_folder_store_refuses_keys_outside_its_folder(tmp_path: Path) -> None:
    """Defence in depth: a project or build id that would climb out of the folder writes
    nothing (the events' ids are validated too, see the snapshot service's tests)."""
    store = LocalStore(tmp_path / "store")
    sha = hashlib.sha256(b"x").hexdigest()
    for project in ("../../escape", "a/../../../escape"):
        with pytest.raises(StoreError, match="outside the folder"):
            await store.put_blob(project, sha, b"x")
        with pytest.raises(StoreError, match="outside the folder"):
            await store.write_index(project, [sha])
    with pytest.raises(StoreError, match="outside the folder"):
        await store.versions("p", "../../../../elsewhere")
    with pytest.raises(StoreError, match="outside the folder"):
        await store.get_blob("p", "../../../../../etc/passwd")
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # nothing made, not the folder
    await store.put_blob("0195a0e2-0000-7000-8000-00000000a001", sha, b"x")  # an id: fine
    assert await store.list_blobs("0195a0e2-0000-7000-8000-00000000a001") == {sha}


async def test_a_redelivered_request_reuses_its_version(s3: S3Store, tmp_path: Path) -> None:
    root = tmp_path / "p"
    _tree(root, {"a.txt": b"a"})
    build = str(uuid.uuid4())
    collected = await collect_folder(root)
    first = await take_snapshot(
        s3, collected, project_id=PROJECT, build_id=build, request_id="req-1"
    )
    again = await take_snapshot(
        s3, collected, project_id=PROJECT, build_id=build, request_id="req-1"
    )
    assert again.reused
    assert await s3.versions(PROJECT, build) == [1]

    # Answered with the first answer's numbers: the snapshot.completed made of it is the same
    # event (same id, same contents), which the projection absorbs; other numbers under that
    # id would be refused and dead-lettered (seen after a FLUSHALL, in tests/test_redis_loss).
    def said(r: SnapshotResult) -> tuple[int, ...]:
        return (r.version, r.files, r.bytes_uploaded, r.blobs_uploaded, r.duration_ms)

    assert first.duration_ms > 0
    assert said(again) == said(first)

    # A later request has made a newer version by the time the first is answered again (its
    # entry was claimed from a runner that died after the manifest, or the reconciler sent it
    # again): still the first answer, not a third version whose snapshot.completed would
    # carry the first one's id with other numbers.
    _tree(root, {"a.txt": b"changed"})
    second = await take_snapshot(
        s3, await collect_folder(root), project_id=PROJECT, build_id=build, request_id="req-2"
    )
    late = await take_snapshot(
        s3, await collect_folder(root), project_id=PROJECT, build_id=build, request_id="req-1"
    )
    assert (second.version, late.reused, said(late)) == (2, True, said(first))
    assert await s3.versions(PROJECT, build) == [1, 2]
    again = await take_snapshot(
        s3, await collect_folder(root), project_id=PROJECT, build_id=build, request_id="req-2"
    )
    assert (again.reused, said(again)) == (True, said(second))


@pytest.mark.integration
async def test_an_unreachable_s3_fails_without_a_partial_version(
    tmp_path: Path, s3: S3Store
) -> None:
    root = tmp_path / "p"
    _tree(root, {"a.txt": b"a", "b.txt": b"b"})
    collected = await collect_folder(root)
    build = str(uuid.uuid4())
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    async with S3Store(
        "nowhere", endpoint_url="http://127.0.0.1:1", attempts=2, connect_timeout_s=0.2
    ) as dead:
        with pytest.raises(StoreError, match="nowhere"):
            await take_snapshot(dead, collected, project_id=PROJECT, build_id=build)
    # A store that fails half-way (blobs written, the manifest refused) lists no version.
    original = s3.put_manifest

    async def refuse(*_: object) -> None:
        raise StoreError("the manifest write failed")

    s3.put_manifest = refuse  # type: ignore[method-assign, assignment]
    try:
        with pytest.raises(StoreError):
            await take_snapshot(s3, collected, project_id=PROJECT, build_id=build)
    finally:
        s3.put_manifest = original  # type: ignore[method-assign]
    assert await s3.versions(PROJECT, build) == []


async def test_collect_reads_a_local_sandbox_and_honours_snapshotignore(tmp_path: Path) -> None:
    sandboxes = LocalSandboxes(tmp_path / "sandboxes", isolation="unsafe-none")
    box: LocalSandbox = await sandboxes.create(build_id=str(uuid.uuid4()), metadata={})
    _tree(
        box.workspace,
        {"app.py": b"x", "server.log": b"log", ".snapshotignore": b"*.log\n", "dist/app.js": b"y"},
    )
    collected = await collect_sandbox(box)
    assert sorted(f.path for f in collected.files) == [".snapshotignore", "app.py"]
    assert collected.ignored == 2


@pytest.mark.integration
async def test_large_files_go_multipart_and_the_cli_restores_into_a_folder(
    s3: S3Store, s3_endpoint_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "p"
    big = os.urandom(6 * 1024 * 1024 + 17)
    _tree(root, {"assets/video.bin": big, "tool.sh": b"#!/bin/sh\n"})
    (root / "tool.sh").chmod(0o755)
    build = str(uuid.uuid4())
    async with S3Store(
        s3.bucket, prefix="test", endpoint_url=s3_endpoint_url, multipart_threshold=5 * 1024 * 1024
    ) as store:
        await take_snapshot(store, await collect_folder(root), project_id=PROJECT, build_id=build)
        stored = await store.client.head_object(
            Bucket=s3.bucket, Key="test/" + blob_key(PROJECT, hashlib.sha256(big).hexdigest())
        )
    assert "-" in stored["ETag"]  # a multipart upload's ETag: "<md5 of parts>-<parts>"

    monkeypatch.setenv("PROJECT_SNAPSHOT_BUCKET", s3.bucket)
    monkeypatch.setenv("SNAPSHOT_PREFIX", "test")
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_endpoint_url)
    listed = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["snapshots", "list", "--project", PROJECT, "--build", build, "--json"],
    )
    assert listed.exit_code == 0, listed.output
    assert [(r["version"], r["files"]) for r in json.loads(listed.stdout)] == [(1, 2)]
    target = tmp_path / "restored"
    restored = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["snapshots", "restore", "--project", PROJECT, "--build", build, "--to", str(target)],
    )
    assert restored.exit_code == 0, restored.output
    assert _files(target) == _files(root)
    assert (target / "tool.sh").stat().st_mode & 0o111
    missing = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["snapshots", "restore", "--project", PROJECT, "--build", "nope", "--to", str(target)],
    )
    assert missing.exit_code == 1
    assert "has no snapshot" in missing.stderr


async def test_collect_never_reads_through_a_symlink_the_sandbox_planted(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.txt").write_text("host secret")
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "app.py").write_text("print('hi')\n")
    (project / "p").symlink_to(host / "secret.txt")
    (project / "everything").symlink_to("/")
    (project / "up").symlink_to(host)
    (project / ".snapshotignore").symlink_to(host / "secret.txt")
    os.mkfifo(project / "fifo")  # a reader that followed it would block

    collected = await collect_folder(project)

    assert [f.path for f in collected.files] == ["src/app.py"]
    for entry in collected.files:
        assert b"host secret" not in await entry.read()
    # The file swapped for a symlink after collection is refused when its bytes are read.
    (project / "src" / "app.py").unlink()
    (project / "src" / "app.py").symlink_to(host / "secret.txt")
    with pytest.raises(FileNotFoundError):
        await collected.files[0].read()


async def test_a_file_changed_after_it_was_hashed_is_never_stored_under_the_old_hash(
    tmp_path: Path,
) -> None:
    """A file changes between its hashing and its upload (a server's log; or a sandbox swapping
    it on purpose). Storing the new bytes under the old hash would make the project's blob
    index serve them for the old content to every later snapshot and restore. The file is left
    out of that version and named; the rest of the snapshot is taken."""
    store = LocalStore(tmp_path / "store")
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("print('the real one')\n")
    (project / "dev.log").write_text("started\n")
    collected = await collect_folder(project)
    (project / "dev.log").write_text("started\nGET / 200\n")
    ids = {"project_id": str(uuid.uuid4()), "build_id": str(uuid.uuid4())}
    taken = await take_snapshot(store, collected, **ids)
    assert (taken.changed, taken.files) == (("dev.log",), 1)
    old = hashlib.sha256(b"started\n").hexdigest()
    assert old not in await store.list_blobs(ids["project_id"])
    restored = tmp_path / "restored"
    await restore(store, restored, **ids)
    assert [p.name for p in restored.iterdir()] == ["app.py"]


async def test_of_two_files_of_one_content_the_unchanged_one_carries_it(tmp_path: Path) -> None:
    """The file read for a content changed, another file held the same content when collected:
    that one is read and stored instead, and both are in the version as they were collected."""
    store = LocalStore(tmp_path / "store")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("a.py", "b.py"):
        (project / name).write_text("x = 1\n")
    collected = await collect_folder(project)
    first = collected.files[0].path
    (project / first).write_text("x = 2  # swapped\n")
    ids = {"project_id": str(uuid.uuid4()), "build_id": str(uuid.uuid4())}
    taken = await take_snapshot(store, collected, **ids)
    assert (taken.changed, taken.files, taken.blobs_uploaded) == ((), 2, 1)
    restored = tmp_path / "restored"
    await restore(store, restored, **ids)
    assert {p.name: p.read_text() for p in restored.iterdir()} == {
        "a.py": "x = 1\n",
        "b.py": "x = 1\n",
    }
