"""Limits on a whole sandbox, where the host lets the runner make cgroups.

rlimits (:class:`~cofounder_sandbox.jail.Limits`) bound each process; a cgroup bounds all of a
sandbox's processes together: their memory (the kernel's OOM killer acts inside the group) and
their number. One group per sandbox, below the runner's own cgroup, holding the sandbox's first
process and every command (each enters it before it runs, so what it forks stays in it).

Two layouts:

- cgroup v2 (``/sys/fs/cgroup`` is the unified hierarchy) when the runner's cgroup is
  delegated with the ``memory`` and ``pids`` controllers enabled for its children
  (``cgroup.subtree_control``): ``memory.max`` and ``pids.max``;
- cgroup v1 when the ``memory`` and ``pids`` hierarchies are mounted and writable (a root
  runner on a host like this one): ``memory.limit_in_bytes`` and ``pids.max``.

Neither (an unprivileged runner without delegation): ``None``, the rlimits stay the floor.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["SandboxCgroup"]

_ROOT: Final = Path("/sys/fs/cgroup")


def _own(controller: str | None) -> str | None:
    """This process's cgroup path in the v1 hierarchy of ``controller`` (None: the v2 one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller is None and controllers == "":
            return path
        if controller is not None and controller in controllers.split(","):
            return path
    return None


@dataclass(frozen=True, slots=True)
class SandboxCgroup:
    """The cgroup(s) of one sandbox: one folder in v2, one per controller in v1."""

    folders: tuple[Path, ...]
    version: int

    @classmethod
    def make(cls, name: str, *, memory_bytes: int, processes: int) -> SandboxCgroup | None:
        """Create (or find) the sandbox's group with its limits; None where the host does not
        let this runner."""
        for make in (cls._v2, cls._v1):
            with contextlib.suppress(OSError):
                group = make(name)
                if group is not None:
                    group.limit(memory_bytes=memory_bytes, processes=processes)
                    return group
        return None

    @classmethod
    def _v2(cls, name: str) -> SandboxCgroup | None:
        own = _own(None)
        if own is None or not (_ROOT / "cgroup.controllers").exists():
            return None
        parent = _ROOT / own.lstrip("/")
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        if not {"memory", "pids"} <= set(enabled):
            return None
        folder = parent / name
        folder.mkdir(exist_ok=True)
        return cls((folder,), 2)

    @classmethod
    def _v1(cls, name: str) -> SandboxCgroup | None:
        folders = []
        for controller in ("memory", "pids"):
            own = _own(controller)
            base = _ROOT / controller
            if own is None or not (base / "cgroup.procs").exists():
                return None
            folder = base / own.lstrip("/") / name
            folder.mkdir(exist_ok=True)
            folders.append(folder)
        return cls(tuple(folders), 1)

    def limit(self, *, memory_bytes: int, processes: int) -> None:
        if self.version == 2:
            folder = self.folders[0]
            (folder / "memory.max").write_text(str(memory_bytes))
            if (folder / "memory.swap.max").exists():
                (folder / "memory.swap.max").write_text("0")  # no way round the limit
            (folder / "pids.max").write_text(str(processes))
            return
        memory, pids = self.folders
        (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        (pids / "pids.max").write_text(str(processes))

    def enter(self) -> None:
        """Move the calling process into the group (run in a child before ``exec``)."""
        pid = str(os.getpid())
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(pid)

    def remove(self) -> bool:
        """Remove the group once its processes are gone; whether it is gone (a group that still
        holds a process, even one being reaped, cannot be removed yet)."""
        gone = True
        for folder in self.folders:
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                gone = False
        return gone
