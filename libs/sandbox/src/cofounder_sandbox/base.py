"""The sandbox interface the tools and the loop use, whatever runs underneath."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from cofounder_contracts.events import SandboxKind

__all__ = [
    "MAX_READ_BYTES",
    "PROJECT_DIR",
    "CommandResult",
    "FileTooLarge",
    "PathOutsideProject",
    "PortNotForwarded",
    "Sandbox",
    "SandboxGone",
    "Sandboxes",
    "Shell",
    "confine",
]

#: Where the project lives inside every sandbox.
PROJECT_DIR: Final = "/home/user/project"

#: The largest file a tool reads whole (the editor's files, the screenshot's PNG): a sparse
#: file of gigabytes, made in a moment by ``truncate``, must not be read into the runner.
MAX_READ_BYTES: Final = 16 * 1024 * 1024


class FileTooLarge(OSError):
    """A file over the size the caller reads whole (``read_file``'s ``limit``)."""


class SandboxGone(Exception):
    """The sandbox no longer exists (killed, expired); the caller makes a new one."""


class PathOutsideProject(ValueError):
    """A path that leaves the project folder; tools refuse it."""


class PortNotForwarded(ValueError):
    """A preview of a port the sandbox does not expose; tools refuse it."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a command printed (stdout and stderr interleaved), and how it ended."""

    output: str
    exit_code: int | None  # None when it timed out
    timed_out: bool = False


def confine(path: str) -> str:
    """``path`` as a normalised absolute path inside :data:`PROJECT_DIR`.

    Relative paths are taken from the project folder. Raises :class:`PathOutsideProject` for
    anything that ends up outside it (``..``, other absolute paths).
    """
    joined = path if path.startswith("/") else posixpath.join(PROJECT_DIR, path)
    normal = posixpath.normpath(joined)
    if normal != PROJECT_DIR and not normal.startswith(PROJECT_DIR + "/"):
        raise PathOutsideProject(
            f"{path} is outside the project folder {PROJECT_DIR}; only paths inside it are allowed"
        )
    return normal


class Shell(Protocol):
    """A persistent shell session: working directory and variables carry over between commands."""

    async def run(self, command: str, *, timeout: float) -> CommandResult: ...

    async def close(self) -> None: ...


class Sandbox(Protocol):
    """One build's sandbox. Paths are sandbox paths under :data:`PROJECT_DIR` (already confined)."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> SandboxKind: ...

    async def open_shell(self) -> Shell: ...

    async def run(self, command: str, *, timeout: float, browser: bool = False) -> CommandResult:
        """A one-off command in a fresh shell (state does not carry over). ``browser``: the
        command runs a web browser, which a local sandbox lets reserve the address space it
        needs (its memory stays bounded by the sandbox's cgroup); elsewhere nothing changes."""
        ...

    def internal_url(self, port: int) -> str:
        """How a process inside the sandbox reaches the sandbox's ``port``."""
        ...

    async def read_file(self, path: str, *, limit: int = MAX_READ_BYTES) -> bytes:
        """The file's bytes; ``FileNotFoundError`` / ``IsADirectoryError`` as for local files,
        :class:`FileTooLarge` over ``limit``, an ``OSError`` for what is no regular file (a
        FIFO, whose reading would wait for a writer)."""
        ...

    async def write_file(self, path: str, data: bytes) -> None:
        """Create or replace the file, making parent folders."""
        ...

    async def is_dir(self, path: str) -> bool: ...

    async def exists(self, path: str) -> bool: ...

    async def list_dir(self, path: str, *, depth: int) -> list[str]:
        """Entries under ``path`` up to ``depth`` levels, hidden ones and dependency folders
        left out, folders with a trailing ``/``, sorted."""
        ...

    async def glob(self, pattern: str, root: str) -> list[str]: ...

    async def grep(self, pattern: str, root: str, include: str | None) -> list[str]:
        """``path:line:text`` for each match of the regular expression."""
        ...

    async def preview_url(self, port: int) -> str:
        """The URL under which the sandbox's ``port`` is reachable from outside."""
        ...

    async def pause(self) -> None: ...

    async def kill(self) -> None: ...


class Sandboxes(Protocol):
    """Makes and finds sandboxes of one kind."""

    kind: SandboxKind

    async def create(self, *, build_id: str, metadata: Mapping[str, str]) -> Sandbox: ...

    async def connect(self, sandbox_id: str) -> Sandbox:
        """The live sandbox (resumed if paused); :class:`SandboxGone` when it is gone."""
        ...

    async def close(self) -> None: ...
