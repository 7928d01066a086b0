"""The local sandbox: one folder per sandbox, commands as child processes.

Layout under the sandboxes root: ``<id>/project`` (the project, seen as ``/home/user/project``)
and ``<id>/sandbox.json`` (its host port, its process groups, running / paused / killed).

Isolation, when ``bwrap`` (bubblewrap) is installed: the host is mounted read-only, the project
read-write at ``/home/user/project``, ``/home``, ``/root``, ``/tmp`` and the sandboxes root are
empty tmpfs (no other build's files, no credentials), the network is shared (a preview must be
reachable). Without it, the shell runs in the project folder with the same scrubbed environment
and limits; file tools still map ``/home/user/project`` to the folder, but a bash command that
names that absolute path will not find it (the demo transcript uses relative paths in bash).

Always: a scrubbed environment (no variable of the runner leaks in, so no secret does), resource
limits (no core files, file size, open files), every file-tool path confined to the project.

Preview: each sandbox gets a free host port as ``$PORT``; asking for a preview of port 3000 (the
E2B template's convention) or of ``$PORT`` gives ``http://127.0.0.1:$PORT``.

Pause sends SIGSTOP to the sandbox's process groups and connect sends SIGCONT, so a paused build's
dev server really stops. Processes outlive the runner (a crashed runner's successor reconnects
and finds the dev server still running), as an E2B sandbox outlives its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from cofounder_contracts.events import SandboxKind
from cofounder_sandbox.base import PROJECT_DIR, CommandResult, SandboxGone
from cofounder_sandbox.shell import ProcessShell

__all__ = ["LocalSandbox", "LocalSandboxes"]

Isolation = Literal["auto", "bwrap", "none"]

_SKIP_DIRS: Final = frozenset({"node_modules", ".git", "__pycache__", ".venv", "dist", "build"})
_MAX_LIST: Final = 1_000
_MAX_GREP: Final = 500
_GREP_MAX_FILE: Final = 2 * 1024 * 1024
_PREVIEW_WAIT_S: Final = 10.0
_TEMPLATE_PORT: Final = 3000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _limits() -> None:
    """Runs in the child before exec: resource limits of every sandbox process."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 30, 2 << 30))
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))


class LocalSandbox:
    """One local sandbox (see the module docstring)."""

    def __init__(self, owner: LocalSandboxes, sandbox_id: str, state: dict[str, Any]) -> None:
        self._owner = owner
        self._id = sandbox_id
        self._state = state
        self.home = owner.root / sandbox_id
        self.workspace = self.home / "project"

    @property
    def id(self) -> str:
        return self._id

    @property
    def kind(self) -> SandboxKind:
        return SandboxKind.LOCAL

    @property
    def port(self) -> int:
        return int(self._state["port"])

    def host_path(self, path: str) -> Path:
        """The host path of a confined sandbox path; symlinks leading out are refused."""
        relative = os.path.relpath(path, PROJECT_DIR)
        host = (self.workspace / relative).resolve()
        workspace = self.workspace.resolve()
        if host != workspace and workspace not in host.parents:
            raise PermissionError(f"{path} resolves outside the project folder")
        return host

    def _save(self) -> None:
        tmp = self.home / "sandbox.json.tmp"
        tmp.write_text(json.dumps(self._state))
        tmp.replace(self.home / "sandbox.json")

    def _record_group(self, pgid: int) -> None:
        groups = [g for g in self._state.get("pgids", []) if _alive(g)]
        groups.append(pgid)
        self._state["pgids"] = groups
        self._save()

    def _env(self) -> dict[str, str]:
        home = "/home/user" if self._owner.bwrap else str(self.home)
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": home,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "PORT": str(self.port),
            "PROJECT_DIR": PROJECT_DIR if self._owner.bwrap else str(self.workspace),
            "PYTHONUNBUFFERED": "1",
            "CI": "true",
        }

    def _argv(self) -> list[str]:
        shell = ["bash", "--noprofile", "--norc"]
        if not self._owner.bwrap:
            return shell
        root = str(self._owner.root.resolve())
        return [
            self._owner.bwrap,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",  # noqa: S108 - a private, empty /tmp inside the sandbox
            "--tmpfs", "/root",
            "--tmpfs", "/home",
            "--tmpfs", root,
            "--bind", str(self.workspace.resolve()), PROJECT_DIR,
            "--chdir", PROJECT_DIR,
            *shell,
        ]  # fmt: skip

    async def open_shell(self) -> ProcessShell:
        shell = ProcessShell(
            self._argv(),
            cwd=str(self.workspace),
            env=self._env(),
            on_start=self._record_group,
            preexec=_limits,
            wrapped=self._owner.bwrap is not None,
        )
        await shell.start()
        return shell

    async def run(self, command: str, *, timeout: float) -> CommandResult:
        """A one-off command in a fresh shell (in a subshell: ``exit`` ends only the command)."""
        shell = await self.open_shell()
        try:
            return await shell.run(f"(\n{command}\n)", timeout=timeout)
        finally:
            await shell.close()

    async def read_file(self, path: str) -> bytes:
        return await asyncio.to_thread(self.host_path(path).read_bytes)

    async def write_file(self, path: str, data: bytes) -> None:
        host = self.host_path(path)

        def write() -> None:
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_bytes(data)

        await asyncio.to_thread(write)

    async def is_dir(self, path: str) -> bool:
        return self.host_path(path).is_dir()

    async def exists(self, path: str) -> bool:
        return self.host_path(path).exists()

    async def list_dir(self, path: str, *, depth: int) -> list[str]:
        base = self.host_path(path)

        def walk() -> list[str]:
            out: list[str] = []
            for current, dirs, files in os.walk(base):
                level = len(Path(current).relative_to(base).parts)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
                rel = Path(current).relative_to(base)
                if level >= depth:
                    dirs[:] = []
                out.extend(f"{path.rstrip('/')}/{rel / d}/".replace("/./", "/") for d in dirs)
                out.extend(
                    f"{path.rstrip('/')}/{rel / f}".replace("/./", "/")
                    for f in sorted(files)
                    if not f.startswith(".")
                )
                if len(out) > _MAX_LIST:
                    break
            return sorted(out)[:_MAX_LIST]

        return await asyncio.to_thread(walk)

    async def glob(self, pattern: str, root: str) -> list[str]:
        base = self.host_path(root)

        def find() -> list[str]:
            out: list[str] = []
            for match in base.glob(pattern):
                rel = match.relative_to(base)
                if any(p in _SKIP_DIRS for p in rel.parts):
                    continue
                out.append(f"{root.rstrip('/')}/{rel}" + ("/" if match.is_dir() else ""))
                if len(out) >= _MAX_LIST:
                    break
            return sorted(out)

        return await asyncio.to_thread(find)

    async def grep(self, pattern: str, root: str, include: str | None) -> list[str]:
        regex = re.compile(pattern)
        base = self.host_path(root)

        def search() -> list[str]:
            out: list[str] = []
            files = [base] if base.is_file() else []
            if not files:
                for current, dirs, names in os.walk(base):
                    dirs[:] = sorted(
                        d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")
                    )
                    files.extend(Path(current) / n for n in sorted(names))
            for file in files:
                if include and not fnmatch.fnmatch(file.name, include):
                    continue
                try:
                    if file.stat().st_size > _GREP_MAX_FILE:
                        continue
                    text = file.read_bytes()
                except OSError:
                    continue
                if b"\0" in text[:8192]:
                    continue
                shown = f"{PROJECT_DIR}/{file.relative_to(self.workspace)}"
                for n, line in enumerate(text.decode(errors="replace").splitlines(), 1):
                    if regex.search(line):
                        out.append(f"{shown}:{n}:{line[:300]}")
                        if len(out) >= _MAX_GREP:
                            return out
            return out

        return await asyncio.to_thread(search)

    def internal_url(self, port: int) -> str:
        target = self.port if port in (_TEMPLATE_PORT, self.port) else port
        return f"http://127.0.0.1:{target}"

    async def preview_url(self, port: int) -> str:
        target = self.port if port in (_TEMPLATE_PORT, self.port) else port
        deadline = asyncio.get_running_loop().time() + self._owner.preview_wait_s
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", target)
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise ConnectionError(
                        f"nothing is listening on port {port} in the sandbox (the local sandbox "
                        f"maps it to {target}; start the server with $PORT)"
                    ) from None
                await asyncio.sleep(0.2)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return f"http://127.0.0.1:{target}"

    def _signal(self, sig: signal.Signals) -> None:
        for pgid in self._state.get("pgids", []):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

    async def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self._state["status"] = "paused"
        self._save()

    async def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self._state["status"] = "running"
        self._save()

    async def kill(self) -> None:
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self._state["status"] = "killed"
        self._state["pgids"] = []
        self._save()


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalSandboxes:
    """Makes and finds local sandboxes under ``root``."""

    kind = SandboxKind.LOCAL

    def __init__(
        self,
        root: str | Path,
        *,
        isolation: Isolation = "auto",
        preview_wait_s: float = _PREVIEW_WAIT_S,
    ) -> None:
        self.preview_wait_s = preview_wait_s
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        found = shutil.which("bwrap")
        if isolation == "bwrap" and not found:
            raise RuntimeError("isolation 'bwrap' asked for, but bubblewrap is not installed")
        self.bwrap: str | None = found if isolation != "none" else None

    async def create(self, *, build_id: str, metadata: Mapping[str, str]) -> LocalSandbox:
        sandbox_id = f"local-{build_id[:8]}-{secrets.token_hex(4)}"
        home = self.root / sandbox_id
        (home / "project").mkdir(parents=True)
        state: dict[str, Any] = {
            "build_id": build_id,
            "metadata": dict(metadata),
            "port": _free_port(),
            "pgids": [],
            "status": "running",
        }
        sandbox = LocalSandbox(self, sandbox_id, state)
        sandbox._save()
        return sandbox

    async def connect(self, sandbox_id: str) -> LocalSandbox:
        if "/" in sandbox_id or sandbox_id.startswith("."):
            raise SandboxGone(f"not a local sandbox id: {sandbox_id}")
        path = self.root / sandbox_id / "sandbox.json"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            raise SandboxGone(f"local sandbox {sandbox_id} does not exist") from None
        if state.get("status") == "killed":
            raise SandboxGone(f"local sandbox {sandbox_id} was killed")
        sandbox = LocalSandbox(self, sandbox_id, state)
        if state.get("status") == "paused":
            await sandbox.resume()
        return sandbox

    async def close(self) -> None:
        return None

    async def kill_all(self) -> int:
        """Kill every sandbox under the root (development and test teardown); return how many."""
        killed = 0
        for state in self.root.glob("*/sandbox.json"):
            try:
                sandbox = await self.connect(state.parent.name)
            except SandboxGone:
                continue
            await sandbox.kill()
            killed += 1
        return killed
