"""Reading a sandbox's project files for a snapshot: paths, sizes, modes and sha256 hashes, with
the ignore rules applied and files above the size limit reported (not silently dropped).

Local sandboxes are read straight from their folder (hashes streamed, bytes read again only for
blobs the store lacks). E2B sandboxes are read in one archive: ``tar`` runs inside the sandbox and
the archive comes back in one file read, rather than one request per file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cofounder_sandbox.base import PROJECT_DIR, Sandbox
from cofounder_sandbox.local import LocalSandbox
from cofounder_snapshots.ignore import IGNORE_FILE, IgnoreRules

__all__ = ["Collected", "FileEntry", "collect_folder", "collect_sandbox"]

#: Files above this size are left out of snapshots (and reported).
DEFAULT_MAX_FILE_BYTES: Final = 50 * 1024 * 1024
_ARCHIVE: Final = ".cofounder-snapshot.tar"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a snapshot; ``read`` returns its bytes."""

    path: str  # relative to the project, "/"-separated
    size: int
    mode: int  # permission bits
    sha256: str
    read: Callable[[], Awaitable[bytes]] = field(repr=False, compare=False)


@dataclass(slots=True)
class Collected:
    files: list[FileEntry]
    too_large: list[tuple[str, int]]
    ignored: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _rules(root: Path) -> IgnoreRules:
    rules = IgnoreRules()
    extra = root / IGNORE_FILE
    if extra.is_file():
        rules = rules.with_file(extra.read_text(errors="replace"))
    return rules


def _reader(path: Path) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        return await asyncio.to_thread(path.read_bytes)

    return read


def _walk(root: Path, max_file_bytes: int) -> Collected:
    rules = _rules(root)
    out = Collected(files=[], too_large=[])
    for current, dirs, names in os.walk(root):
        base = Path(current)
        rel_base = base.relative_to(root).as_posix()
        prefix = "" if rel_base == "." else rel_base + "/"
        kept = []
        for d in sorted(dirs):
            if (base / d).is_symlink() or rules.ignored(prefix + d, is_dir=True):
                out.ignored += 1
            else:
                kept.append(d)
        dirs[:] = kept
        for name in sorted(names):
            rel = prefix + name
            full = base / name
            info = full.lstat()
            if not stat.S_ISREG(info.st_mode) or rules.ignored(rel) or name == _ARCHIVE:
                out.ignored += 1
                continue
            if info.st_size > max_file_bytes:
                out.too_large.append((rel, info.st_size))
                continue
            with full.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            out.files.append(
                FileEntry(rel, info.st_size, stat.S_IMODE(info.st_mode), digest, _reader(full))
            )
    return out


async def collect_folder(root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Collected:
    """The files under ``root`` (the project folder)."""
    return await asyncio.to_thread(_walk, root, max_file_bytes)


def _constant(data: bytes) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        return data

    return read


async def _collect_archive(sandbox: Sandbox, max_file_bytes: int) -> Collected:
    heavy = " ".join(
        f"--exclude=./{d}"
        for d in (
            "node_modules",
            ".git",
            ".venv",
            "venv",
            "dist",
            "build",
            ".next",
            "target",
            "__pycache__",
        )
    )
    result = await sandbox.run(
        f"cd {PROJECT_DIR} && tar -cf {_ARCHIVE} {heavy} --exclude=./{_ARCHIVE} .", timeout=300
    )
    if result.exit_code not in (0, 1):  # 1: a file changed while it was read, still usable
        raise RuntimeError(f"could not archive the project in the sandbox: {result.output[-500:]}")
    try:
        data = await sandbox.read_file(f"{PROJECT_DIR}/{_ARCHIVE}")
    finally:
        await sandbox.run(f"rm -f {PROJECT_DIR}/{_ARCHIVE}", timeout=30)
    out = Collected(files=[], too_large=[])
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        rules = IgnoreRules()
        for member in members:
            if member.name.lstrip("./") == IGNORE_FILE and member.isfile():
                extracted = archive.extractfile(member)
                if extracted is not None:
                    rules = rules.with_file(extracted.read().decode(errors="replace"))
        for member in members:
            rel = member.name.removeprefix("./")
            if not member.isfile() or not rel:
                continue
            parts = rel.split("/")
            if any(
                rules.ignored("/".join(parts[: i + 1]), is_dir=True) for i in range(len(parts) - 1)
            ) or rules.ignored(rel):
                out.ignored += 1
                continue
            if member.size > max_file_bytes:
                out.too_large.append((rel, member.size))
                continue
            extracted = archive.extractfile(member)
            body = extracted.read() if extracted is not None else b""
            out.files.append(
                FileEntry(
                    rel,
                    len(body),
                    member.mode & 0o7777,
                    hashlib.sha256(body).hexdigest(),
                    _constant(body),
                )
            )
    out.files.sort(key=lambda f: f.path)
    return out


async def collect_sandbox(
    sandbox: Sandbox, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> Collected:
    """The project files of a live sandbox."""
    if isinstance(sandbox, LocalSandbox):
        return await collect_folder(sandbox.workspace, max_file_bytes=max_file_bytes)
    return await _collect_archive(sandbox, max_file_bytes)
