"""What a hostile sandbox can put in its project to hurt the snapshot service, and how the
collector holds: forged archives (E2B's path reads a tar the sandbox can replace), names that
are not UTF-8, trees too deep for recursion."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tarfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cofounder_snapshots import collect
from cofounder_snapshots.collect import Collected, collect_folder, parse_archive
from cofounder_snapshots.ignore import MAX_PROJECT_RULES, IgnoreRules


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def test_a_sparse_archive_is_refused_before_its_holes_are_filled(tmp_path: Path) -> None:
    # 40 files of 49 MB of holes, under the per-file limit one by one, archived as GNU tar's
    # sparse members (`tar -S`) in a few KB: read, they would have been 2 GB of the snapshot
    # service's memory.
    project = tmp_path / "p"
    project.mkdir()
    for n in range(40):
        with open(project / f"f{n}", "wb") as f:
            f.truncate(49 * 1024 * 1024)
    subprocess.run(["tar", "-S", "-cf", str(tmp_path / "bomb.tar"), "."], cwd=project, check=True)
    data = (tmp_path / "bomb.tar").read_bytes()
    assert len(data) < 200_000
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert all(m.issparse() for m in archive.getmembers() if m.isfile())
    with pytest.raises(ValueError, match="declares more"):
        parse_archive(data, max_file_bytes=50 * 1024 * 1024)


def test_an_archive_with_names_outside_the_project_or_repeated_is_refused() -> None:
    for bad in ("../outside", "/etc/passwd", "./a/../../up"):
        with pytest.raises(ValueError, match="not a path inside the project"):
            parse_archive(_tar({"./ok": b"1", bad: b"2"}), max_file_bytes=1 << 20)
    with pytest.raises(ValueError, match="twice"):
        parse_archive(_tar({"./a": b"1", "a": b"2"}), max_file_bytes=1 << 20)


def test_the_archives_snapshotignore_is_applied() -> None:
    # tar writes "./.snapshotignore"; its rules must apply as on a local sandbox.
    collected = parse_archive(
        _tar({"./.snapshotignore": b"secret.txt\n", "./secret.txt": b"s", "./app.py": b"a"}),
        max_file_bytes=1 << 20,
    )
    assert sorted(f.path for f in collected.files) == [".snapshotignore", "app.py"]


def test_names_that_are_not_utf8_are_left_out_and_the_rest_is_stored(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "app.py").write_text("ok")
    os.makedirs(os.path.join(os.fsencode(root), b"dir\xff"))
    with open(os.path.join(os.fsencode(root), b"bad\xfe.txt"), "wb") as f:
        f.write(b"hi")
    with open(os.path.join(os.fsencode(root), b"dir\xff", b"in.txt"), "wb") as f:
        f.write(b"hi")
    collected = _run(collect_folder(root))
    assert [f.path for f in collected.files] == ["app.py"]
    assert collected.ignored == 2
    msgspec.json.encode([f.path for f in collected.files])  # what the manifest holds encodes

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", encoding="utf-8", errors="surrogateescape") as a:
        for name in ("./app.py", "./bad\udcfe.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            a.addfile(info, io.BytesIO(b"hi"))
    parsed = parse_archive(buffer.getvalue(), max_file_bytes=1 << 20)
    assert [f.path for f in parsed.files] == ["app.py"]
    assert parsed.ignored == 1


def test_a_tree_deeper_than_recursion_goes_is_collected(tmp_path: Path) -> None:
    root = tmp_path / "p"
    path = os.fsencode(root)
    os.makedirs(path)
    for _ in range(1_500):
        path = os.path.join(path, b"d")
        os.mkdir(path)
    with open(os.path.join(path, b"deep.txt"), "wb") as f:
        f.write(b"x")
    (root / "app.py").write_text("ok")
    try:
        collected = _run(collect_folder(root))
        assert "app.py" in [f.path for f in collected.files]
        assert collected.ignored >= 1  # what lies below the depth the walk goes to
    finally:
        # pytest's clean-up (shutil.rmtree) recurses too: unmade from the bottom up.
        os.remove(os.path.join(path, b"deep.txt"))
        while path != os.fsencode(root):
            os.rmdir(path)
            path = os.path.dirname(path)


def _run(awaitable: Coroutine[Any, Any, Collected]) -> Collected:
    return asyncio.run(awaitable)


def test_a_huge_snapshotignore_adds_at_most_its_cap_of_rules() -> None:
    # The file is the sandbox's: 110,000 distinct rules, each tried on every path, cost the
    # snapshot service 71 s of CPU for 24 files. Rules past the cap, and overlong ones, are
    # not applied; the ones before still are.
    lines = [f"q{n:06d}*" for n in range(110_000)]
    rules = IgnoreRules().with_file("\n".join(["first.txt", "x" * 300, *lines]))
    assert rules.ignored("first.txt")
    assert rules.ignored(f"q{MAX_PROJECT_RULES - 2:06d}.log")  # within the cap
    assert not rules.ignored(f"q{MAX_PROJECT_RULES:06d}.log")  # past it
    assert not rules.ignored("x" * 300)  # too long to be a rule
    assert rules.ignored("node_modules", is_dir=True)  # the defaults stay


def test_a_project_of_more_files_than_a_snapshot_holds_fails_its_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300,000 empty files take a sandbox seconds and the snapshot service 0.7 KB each until
    # the manifest is written: past the cap the snapshot fails, saying why.
    monkeypatch.setattr(collect, "MAX_FILES", 50)
    root = tmp_path / "p"
    root.mkdir()
    for n in range(51):
        (root / f"f{n}").write_bytes(b"")
    with pytest.raises(ValueError, match="more than 50 files"):
        _run(collect_folder(root))
    with pytest.raises(ValueError, match="more than 50 files"):
        parse_archive(_tar({f"./f{n}": b"" for n in range(51)}), max_file_bytes=1 << 20)
    (root / "f50").unlink()
    assert len(_run(collect_folder(root)).files) == 50


def test_the_file_cap_counts_what_the_ignore_rules_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    # A monorepo's nested node_modules is in the E2B archive (tar leaves out what it can by
    # name) but not in the snapshot: it must not count toward the cap.
    monkeypatch.setattr(collect, "MAX_FILES", 3)
    members = {f"./apps/web/node_modules/x/f{n}.js": b"x" for n in range(6)}
    parsed = parse_archive(_tar({**members, "./app.py": b"a"}), max_file_bytes=1 << 20)
    assert [f.path for f in parsed.files] == ["app.py"]
