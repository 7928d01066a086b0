"""File operations confined to the project folder at the moment of each open: nothing to race.

The project folder of a local sandbox is written by hostile code: it can plant a symlink
(``ln -s / root``), or swap a folder for a symlink between a check and a use (``renameat2``
with ``RENAME_EXCHANGE``). Checking a resolved path and opening it later leaves that window open.
Here every path is opened with ``openat2(2)`` and ``RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
RESOLVE_NO_XDEV`` relative to a descriptor of the project folder: the kernel refuses, during the
open itself, any resolution that leaves the folder (``..``, an absolute symlink, a symlink to
``/``, ``/proc/self/root``, another mount). Symlinks that stay inside the folder keep working.

On a kernel without ``openat2`` (before Linux 5.6) each component is opened with ``O_NOFOLLOW``
from the previous one's descriptor: no symlink is followed at all, which is stricter.

Walks (listing, glob, grep) never descend into a symlinked folder and never read a symlinked file:
each step opens one name relative to its parent's descriptor with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from cofounder_sandbox.base import FileTooLarge

__all__ = ["Escape", "ProjectFiles"]

_RESOLVE_NO_XDEV: Final = 0x01
_RESOLVE_NO_MAGICLINKS: Final = 0x02
_RESOLVE_BENEATH: Final = 0x08
_RESOLVE: Final = _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_XDEV
# openat2 has the same number on every architecture that has it (the generic syscall table).
_SYS_OPENAT2: Final = 437
_O_PATH: Final = getattr(os, "O_PATH", 0o10000000)


class Escape(PermissionError):
    """The path leaves the project folder (through ``..``, a symlink or a mount)."""

    def __init__(self, code: int, path: str) -> None:
        super().__init__(code, f"{path or '.'} resolves outside the project folder")
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_has_openat2: bool | None = None if platform.system() == "Linux" else False


def _openat2(dir_fd: int, rel: str, flags: int, mode: int) -> int:
    global _has_openat2  # noqa: PLW0603 - probed once per process
    if _has_openat2 is not False:
        how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, _RESOLVE)
        fd = _libc.syscall(
            _SYS_OPENAT2, dir_fd, os.fsencode(rel or "."), ctypes.byref(how), ctypes.sizeof(how)
        )
        if fd >= 0:
            _has_openat2 = True
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            if err in (errno.EXDEV, errno.ELOOP):
                raise Escape(err, rel)
            raise OSError(err, os.strerror(err), rel)
        _has_openat2 = False
    return _open_nofollow(dir_fd, rel, flags, mode)


def _open_nofollow(dir_fd: int, rel: str, flags: int, mode: int) -> int:
    """The fallback: one component at a time, never following a symlink."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Escape(errno.EXDEV, rel)
    current = os.open(".", _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        for part in parts[:-1]:
            step = os.open(part, _O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=current)  # fmt: skip
            os.close(current)
            current = step
        if not parts:
            return os.open(".", flags | os.O_CLOEXEC, dir_fd=current)
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=current)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Escape(errno.ELOOP, rel) from None
            raise
    finally:
        os.close(current)


@dataclass(frozen=True, slots=True)
class Owner:
    uid: int
    gid: int


#: How deep :meth:`ProjectFiles.walk` goes: a tree thousands of folders deep (made in a moment
#: by a loop of ``mkdir d && cd d``) would exhaust the stack, and hold a descriptor per level.
MAX_DEPTH: Final = 64


def _utf8(name: str) -> bool:
    """Whether a name read from the disk is UTF-8 (Python gives the bytes that are not as lone
    surrogates, which no encoder of JSON or of events takes)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


class ProjectFiles:
    """Reads and writes under ``root`` (a host folder) by paths relative to it.

    ``owner``: when the runner is root and the sandbox runs as another uid, what the runner
    creates is handed to that uid, so the sandbox's own commands can change it.
    """

    def __init__(self, root: str | os.PathLike[str], *, owner: tuple[int, int] | None = None):
        self.root = os.fspath(root)
        self.owner = Owner(*owner) if owner else None
        #: Entries :meth:`walk` passed over: names that are not UTF-8, and what lies deeper
        #: than :data:`MAX_DEPTH`.
        self.passed_over = 0

    @contextlib.contextmanager
    def _root(self) -> Iterator[int]:
        fd = os.open(self.root, _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def opened(self, rel: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> Iterator[int]:
        """A descriptor of ``rel`` opened beneath the root (see the module docstring)."""
        with self._root() as root:
            fd = _openat2(root, rel, flags, mode)
        try:
            yield fd
        finally:
            os.close(fd)

    def stat(self, rel: str) -> os.stat_result | None:
        """The entry's status (symlinks inside followed), ``None`` when it does not exist."""
        try:
            with self.opened(rel, _O_PATH) as fd:
                return os.fstat(fd)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None

    def read_bytes(self, rel: str, *, limit: int) -> bytes:
        """A regular file's bytes, at most ``limit`` of them (:class:`FileTooLarge` beyond).
        Opened with ``O_NONBLOCK``: a FIFO in its place is refused, not waited on."""
        with self.opened(rel, os.O_RDONLY | os.O_NONBLOCK) as fd:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a folder", rel)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device)", rel)
            if info.st_size > limit:
                raise FileTooLarge(errno.EFBIG, f"{info.st_size} bytes, over {limit}", rel)
            chunks = []
            left = limit + 1  # one more tells a file that grew past the limit meanwhile
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                chunks.append(chunk)
                left -= len(chunk)
            if left == 0:
                raise FileTooLarge(errno.EFBIG, f"over {limit} bytes", rel)
            return b"".join(chunks)

    def makedirs(self, rel: str) -> None:
        """Every missing folder of ``rel``, each made relative to its parent's descriptor."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        for n in range(1, len(parts) + 1):
            sub = "/".join(parts[:n])
            if self.stat(sub) is not None:
                continue
            with (
                self.opened("/".join(parts[: n - 1]), _O_PATH | os.O_DIRECTORY) as parent,
                contextlib.suppress(FileExistsError),
            ):
                os.mkdir(parts[n - 1], 0o755, dir_fd=parent)
                if self.owner:
                    os.chown(parts[n - 1], self.owner.uid, self.owner.gid,
                             dir_fd=parent, follow_symlinks=False)  # fmt: skip

    def write_bytes(self, rel: str, data: bytes) -> None:
        parent = rel.rpartition("/")[0]
        if parent:
            self.makedirs(parent)
        with self.opened(rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) as fd:
            if self.owner:
                os.fchown(fd, self.owner.uid, self.owner.gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

    def walk(
        self, rel: str, *, descend: Callable[[str], bool] = lambda _: True
    ) -> Iterator[tuple[str, bool]]:
        """``(path relative to the root, is a folder)`` below ``rel``, depth first, sorted.

        Symlinks are reported as files and never followed; a folder is entered only when
        ``descend(its path)`` says so (it is reported either way). Names that are not UTF-8
        (no event, manifest or model can carry them) and folders deeper than
        :data:`MAX_DEPTH` below ``rel`` are passed over, and counted (:attr:`passed_over`).
        """
        with self.opened(rel, os.O_RDONLY | os.O_DIRECTORY) as fd:
            yield from self._walk(fd, rel.strip("/"), descend, MAX_DEPTH)

    def _walk(
        self, fd: int, prefix: str, descend: Callable[[str], bool], depth: int
    ) -> Iterator[tuple[str, bool]]:
        with os.scandir(fd) as entries:
            listed = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)
        for name, is_dir in listed:
            if not _utf8(name):
                self.passed_over += 1
                continue
            path = f"{prefix}/{name}" if prefix else name
            yield path, is_dir
            if not is_dir or not descend(path):
                continue
            if depth == 0:
                self.passed_over += 1
                continue
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)  # fmt: skip
            except OSError:
                continue  # swapped for a symlink or removed since the listing: not followed
            try:
                yield from self._walk(child, path, descend, depth - 1)
            finally:
                os.close(child)

    @contextlib.contextmanager
    def open_regular(self, rel: str) -> Iterator[int | None]:
        """A descriptor of ``rel`` if it is a regular file (not a symlink), else ``None``.

        The name itself is opened with ``O_NOFOLLOW`` (and ``O_NONBLOCK``, so a FIFO planted
        in its place cannot block the reader)."""
        parent, _, name = rel.rpartition("/")
        try:
            with self.opened(parent, _O_PATH | os.O_DIRECTORY) as dir_fd:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=dir_fd)  # fmt: skip
        except OSError:
            yield None
            return
        try:
            yield fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
        finally:
            os.close(fd)

    def read_regular(self, rel: str, *, limit: int) -> bytes | None:
        """A regular file's bytes if it is one (see :meth:`open_regular`) of at most ``limit``."""
        with self.open_regular(rel) as fd:
            if fd is None or os.fstat(fd).st_size > limit:
                return None
            chunks: list[bytes] = []
            left = limit
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
