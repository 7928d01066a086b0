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
from cofounder_sandbox.beneath import ProjectFiles
from cofounder_sandbox.local import LocalSandbox
from cofounder_snapshots.ignore import IGNORE_FILE, IgnoreRules

__all__ = [
    "ARCHIVE_MAX_BYTES",
    "MAX_FILES",
    "Collected",
    "FileChanged",
    "FileEntry",
    "collect_folder",
    "collect_sandbox",
]

#: Files above this size are left out of snapshots (and reported).
DEFAULT_MAX_FILE_BYTES: Final = 50 * 1024 * 1024
#: The most files a snapshot holds: past it, the snapshot fails (see :func:`_count`).
MAX_FILES: Final = 100_000
#: The most files an E2B project's archive may hold before the ignore rules apply (what ``tar``
#: leaves out is only the heavy folders' names).
_MAX_ARCHIVE_MEMBERS: Final = 10 * MAX_FILES
_ARCHIVE: Final = ".cofounder-snapshot.tar"
#: The largest archive of an E2B sandbox's project read for a snapshot (files over the size
#: limit per file are in it too, and left out only once read).
ARCHIVE_MAX_BYTES: Final = 1024 * 1024 * 1024


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


def _count(files: int) -> None:
    """A :class:`ValueError` (the snapshot fails, saying why) once a project holds more files
    than :data:`MAX_FILES`: each costs the snapshot service memory until the manifest is
    written, and a sandbox makes 300,000 empty ones in seconds."""
    if files > MAX_FILES:
        raise ValueError(
            f"the project holds more than {MAX_FILES} files (after the ignore rules): add the "
            "folders that are generated (dependencies, build output, data) to .snapshotignore"
        )


def _rules(files: ProjectFiles) -> IgnoreRules:
    rules = IgnoreRules()
    extra = files.read_regular(IGNORE_FILE, limit=1 << 20)
    if extra is not None:
        rules = rules.with_file(extra.decode(errors="replace"))
    return rules


class FileChanged(RuntimeError):
    """A file whose bytes, read to be stored, are not those it was hashed with: the sandbox
    changed it meanwhile (a log a server writes, or a swap). Stored, they would stand under
    another content's hash, which the project's blob index then serves to every later snapshot
    and restore of that content; :func:`~cofounder_snapshots.sync.take_snapshot` leaves the
    file out of the version instead, and says so."""


def _reader(
    files: ProjectFiles, rel: str, limit: int, sha256: str
) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        data = await asyncio.to_thread(files.read_regular, rel, limit=limit)
        if data is None:
            raise FileNotFoundError(f"{rel} is no longer a regular file of the project")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise FileChanged(f"{rel} changed while the snapshot was taken")
        return data

    return read


def _walk(root: Path, max_file_bytes: int) -> Collected:
    """The project folder is written by the sandbox (hostile): every name is opened beneath it
    without following symlinks (:mod:`cofounder_sandbox.beneath`), so a symlink planted or
    swapped in cannot make a snapshot of a host file."""
    files = ProjectFiles(root)
    rules = _rules(files)
    out = Collected(files=[], too_large=[])

    def descend(rel: str) -> bool:
        return not rules.ignored(rel, is_dir=True)

    for rel, is_dir in files.walk("", descend=descend):
        if is_dir:
            out.ignored += 0 if descend(rel) else 1
            continue
        if rules.ignored(rel) or rel == _ARCHIVE:
            out.ignored += 1
            continue
        with files.open_regular(rel) as fd:
            if fd is None:  # a symlink, a FIFO, a device: not part of a snapshot
                out.ignored += 1
                continue
            info = os.fstat(fd)
            if info.st_size > max_file_bytes:
                out.too_large.append((rel, info.st_size))
                continue
            with os.fdopen(os.dup(fd), "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        _count(len(out.files) + len(out.too_large) + 1)
        out.files.append(
            FileEntry(
                rel,
                info.st_size,
                stat.S_IMODE(info.st_mode),
                digest,
                _reader(files, rel, max_file_bytes, digest),
            )
        )
    out.ignored += files.passed_over  # names not UTF-8, folders too deep
    return out


async def collect_folder(root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Collected:
    """The files under ``root`` (the project folder)."""
    return await asyncio.to_thread(_walk, root, max_file_bytes)


def _constant(data: bytes) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        return data

    return read


async def _collect_archive(sandbox: Sandbox, max_file_bytes: int) -> Collected:
    # Their contents at any depth, as the default ignore rules leave those folders out
    # (apps/web/node_modules too); a file of that name is kept, as the rules keep it.
    heavy = " ".join(
        f"--exclude='{d}/*'"
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
        # The whole archive in memory (one request): bounded, so a project grown past it is
        # an error the snapshot reports, not the service's memory.
        data = await sandbox.read_file(f"{PROJECT_DIR}/{_ARCHIVE}", limit=ARCHIVE_MAX_BYTES)
    finally:
        await sandbox.run(f"rm -f {PROJECT_DIR}/{_ARCHIVE}", timeout=30)
    return await asyncio.to_thread(parse_archive, data, max_file_bytes=max_file_bytes)


def parse_archive(data: bytes, *, max_file_bytes: int) -> Collected:
    """The files of a project's ``tar`` archive, which the sandbox wrote and may have forged
    (it can replace the file between ``tar`` and the read): refused, as a :class:`ValueError`,
    when its members declare more bytes than it holds (sparse members, whose holes reading
    would fill: a few KB declaring gigabytes), or name a path outside the project or one path
    twice. Names that are not UTF-8 are left out (counted as ignored)."""
    out = Collected(files=[], too_large=[])
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members: list[tarfile.TarInfo] = []
        for member in archive:  # read lazily: stopped at the cap, not after millions of entries
            if member.isfile():
                members.append(member)
                if len(members) > _MAX_ARCHIVE_MEMBERS:
                    raise ValueError(
                        f"the project's archive holds more than {_MAX_ARCHIVE_MEMBERS} files"
                    )
        declared = sum(m.size for m in members)
        if declared > len(data) or any(m.issparse() for m in members):
            raise ValueError(
                f"the project's archive declares more bytes ({declared}) than it holds "
                f"({len(data)}): a sparse or forged archive"
            )
        named: dict[str, tarfile.TarInfo] = {}
        for member in members:
            rel = _member_path(member.name)
            if rel is None:
                out.ignored += 1
                continue
            if rel in named:
                raise ValueError(f"the project's archive holds {rel!r} twice")
            named[rel] = member
        rules = IgnoreRules()
        if IGNORE_FILE in named:
            extracted = archive.extractfile(named[IGNORE_FILE])
            if extracted is not None:
                rules = rules.with_file(extracted.read(1 << 20).decode(errors="replace"))
        for rel, member in named.items():
            parts = rel.split("/")
            if any(
                rules.ignored("/".join(parts[: i + 1]), is_dir=True) for i in range(len(parts) - 1)
            ) or rules.ignored(rel):
                out.ignored += 1
                continue
            _count(len(out.files) + len(out.too_large) + 1)  # after the ignore rules
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


def _member_path(name: str) -> str | None:
    """A member's path relative to the project, None for one that is not UTF-8; a
    :class:`ValueError` for one outside the project (absolute, or with ``..``)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return None
    rel = name.removeprefix("./")
    parts = rel.split("/")
    if name.startswith("/") or ".." in parts or not rel:
        raise ValueError(f"{name!r} in the project's archive is not a path inside the project")
    return "/".join(p for p in parts if p not in ("", "."))


async def collect_sandbox(
    sandbox: Sandbox, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> Collected:
    """The project files of a live sandbox."""
    if isinstance(sandbox, LocalSandbox):
        return await collect_folder(sandbox.workspace, max_file_bytes=max_file_bytes)
    return await _collect_archive(sandbox, max_file_bytes)
