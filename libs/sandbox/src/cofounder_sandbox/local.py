"""The local sandbox: one folder per sandbox, its processes held in namespaces of their own.

Layout under the sandboxes root: ``<id>/project`` (the project, ``/home/user/project`` inside),
``<id>/user`` (``/home/user``), ``<id>/tmp``, ``<id>/etc`` (its resolver settings) and
``<id>/sandbox.json`` (its preview port, its uid, where its namespaces are, running / paused /
killed). How the processes are held is in :mod:`cofounder_sandbox.jail`; how the file tools stay
inside the project in :mod:`cofounder_sandbox.beneath`; how ``bash`` runs in
:mod:`cofounder_sandbox.shell`. The threat model is docs/sandbox-threat-model.md.

Isolation is not optional: without bubblewrap, pasta, nsenter, setpriv and ip the local sandbox
refuses to start and says what to install. ``isolation="unsafe-none"`` is the development-only
way round it: commands run as the runner's user on the host's network with only a private mount
namespace (so ``/home/user/project`` exists), and every sandbox made says so in the log.

Preview: each sandbox gets a free host port as ``$PORT``; a preview of that port, or of 3000 (the
E2B template's convention, mapped to it), is ``http://127.0.0.1:$PORT``; any other port is
refused. Pause sends SIGSTOP to every process of the sandbox, connect SIGCONT. Processes outlive
the runner (a crashed runner's successor reconnects and finds the dev server still running), as
an E2B sandbox outlives its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from cofounder_contracts.events import SandboxKind
from cofounder_sandbox.base import (
    MAX_READ_BYTES,
    PROJECT_DIR,
    CommandResult,
    PortNotForwarded,
    SandboxGone,
)
from cofounder_sandbox.beneath import ProjectFiles
from cofounder_sandbox.jail import (
    IsolationUnavailable,
    Jail,
    JailState,
    Limits,
    Mode,
    Tools,
    find_tools,
)
from cofounder_sandbox.searching import SearchesInside
from cofounder_sandbox.shell import SandboxShell

__all__ = ["LocalSandbox", "LocalSandboxes"]

_log = structlog.get_logger("cofounder.sandbox")

_SKIP_DIRS: Final = frozenset({"node_modules", ".git", "__pycache__", ".venv", "dist", "build"})
_MAX_LIST: Final = 1_000
_PREVIEW_WAIT_S: Final = 10.0
_TEMPLATE_PORT: Final = 3000
#: Host uids handed to sandboxes when the runner is root: one each, so the process limit and
#: file ownership are per sandbox. Far above any system or login uid.
_UID_BASE: Final = 3_000_000
_UID_SPAN: Final = 1_000_000
#: Starts of a sandbox tried when its preview port is taken between its choice and its bind.
_PORT_ATTEMPTS: Final = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _descend(rel: str) -> bool:
    name = rel.rpartition("/")[2]
    return name not in _SKIP_DIRS and not name.startswith(".")


def _relative(path: str) -> str:
    """A confined sandbox path relative to the project folder ("" for the folder itself)."""
    return "" if path == PROJECT_DIR else os.path.relpath(path, PROJECT_DIR)


class LocalSandbox(SearchesInside):
    """One local sandbox (see the module docstring)."""

    def __init__(self, owner: LocalSandboxes, sandbox_id: str, state: dict[str, Any]) -> None:
        self._owner = owner
        self._id = sandbox_id
        self._state = state
        self.home = owner.root / sandbox_id
        self.workspace = self.home / "project"
        tier = str(state.get("metadata", {}).get("tier", ""))
        self.jail = Jail(
            home=self.home,
            state=JailState.from_json(state.get("jail", {})),
            mode=owner.isolation,
            egress=owner.egress,
            limits=owner.limits_for(tier),
            tools=owner.tools,
            on_change=self._save,
        )
        chown = owner.isolation == "namespaces" and os.geteuid() == 0
        self.files = ProjectFiles(
            self.workspace, owner=(self.jail.state.uid, self.jail.state.gid) if chown else None
        )

    @property
    def id(self) -> str:
        return self._id

    @property
    def kind(self) -> SandboxKind:
        return SandboxKind.LOCAL

    @property
    def port(self) -> int:
        return self.jail.state.port

    def _save(self) -> None:
        self._state["jail"] = self.jail.state.to_json()
        tmp = self.home / "sandbox.json.tmp"
        tmp.write_text(json.dumps(self._state))
        tmp.replace(self.home / "sandbox.json")

    def _env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/home/user",
            "USER": "user",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "PORT": str(self.port),
            "PROJECT_DIR": PROJECT_DIR,
            "PYTHONUNBUFFERED": "1",
            "CI": "true",
        }

    async def open_shell(self) -> SandboxShell:
        return SandboxShell(self.jail, env=self._env(), ready=self._ready)

    async def _ready(self) -> None:
        """Before each command: a killed sandbox stays dead (even for a runner that still holds
        it); a live one whose namespaces died with the machine gets new ones, same folders."""
        try:
            status = json.loads((self.home / "sandbox.json").read_text()).get("status")
        except (OSError, ValueError):
            status = "killed"
        if status == "killed":
            raise SandboxGone(f"local sandbox {self._id} was killed")
        await self.jail.start()

    async def run(self, command: str, *, timeout: float, browser: bool = False) -> CommandResult:
        """A one-off command in a fresh session (state does not carry over); ``browser``: with
        the address space a browser needs (:meth:`~cofounder_sandbox.jail.Limits.for_browser`)."""
        shell = SandboxShell(self.jail, env=self._env(), ready=self._ready, browser=browser)
        try:
            return await shell.run(command, timeout=timeout)
        finally:
            await shell.close()

    async def read_file(self, path: str, *, limit: int = MAX_READ_BYTES) -> bytes:
        return await asyncio.to_thread(self.files.read_bytes, _relative(path), limit=limit)

    async def write_file(self, path: str, data: bytes) -> None:
        await asyncio.to_thread(self.files.write_bytes, _relative(path), data)

    # is_dir and exists: one stat (openat2, fstat, close) on a local disk, run on the loop: a
    # worker thread's hand-off cost the runner more than the stat (py-spy, issue #18).
    async def is_dir(self, path: str) -> bool:
        info = self.files.stat(_relative(path))
        return info is not None and (info.st_mode & 0o170000) == 0o040000

    async def exists(self, path: str) -> bool:
        return self.files.stat(_relative(path)) is not None

    async def list_dir(self, path: str, *, depth: int) -> list[str]:
        base = _relative(path)

        def walk() -> list[str]:
            out: list[str] = []
            for rel, is_dir in self.files.walk(base, descend=_descend):
                inner = rel[len(base) :].lstrip("/") if base else rel
                parts = inner.split("/")
                if len(parts) > depth or any(p.startswith(".") for p in parts):
                    continue
                if any(p in _SKIP_DIRS for p in parts[:-1]):
                    continue
                out.append(f"{path.rstrip('/')}/{inner}" + ("/" if is_dir else ""))
                if len(out) >= _MAX_LIST:
                    break
            return sorted(out)

        return await asyncio.to_thread(walk)

    def _forwarded(self, port: int) -> int:
        if port not in (_TEMPLATE_PORT, self.port):
            raise PortNotForwarded(
                f"port {port} is not this sandbox's preview port: start the server on $PORT "
                f"({self.port}) or 3000, which maps to it; no other port is reachable"
            )
        return self.port

    def internal_url(self, port: int) -> str:
        return f"http://127.0.0.1:{self._forwarded(port)}"

    async def preview_url(self, port: int) -> str:
        target = self._forwarded(port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._owner.preview_wait_s
        while not await self._listening(target):
            if loop.time() > deadline:
                raise ConnectionError(
                    f"nothing is listening on port {port} in the sandbox (the local sandbox "
                    f"maps it to {target}; start the server with $PORT)"
                )
            await asyncio.sleep(0.2)
        return f"http://127.0.0.1:{target}"

    async def _listening(self, port: int) -> bool:
        if self.jail.mode == "namespaces":
            return self.jail.listening(port)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def pause(self) -> None:
        self.jail.freeze(stop=True)
        self._state["status"] = "paused"
        self._save()

    async def resume(self) -> None:
        self.jail.freeze(stop=False)
        self._state["status"] = "running"
        self._save()

    async def kill(self) -> None:
        await self.jail.stop()
        self._state["status"] = "killed"
        with contextlib.suppress(FileNotFoundError):  # its folder removed already: nothing to mark
            self._save()


class LocalSandboxes:
    """Makes and finds local sandboxes under ``root``.

    ``limits``: per tier (``metadata["tier"]`` of a new sandbox), with ``"default"`` for the rest.
    """

    kind = SandboxKind.LOCAL

    def __init__(
        self,
        root: str | Path,
        *,
        isolation: Mode = "namespaces",
        egress: bool = True,
        limits: Mapping[str, Limits] | None = None,
        preview_wait_s: float = _PREVIEW_WAIT_S,
    ) -> None:
        self.preview_wait_s = preview_wait_s
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.isolation: Mode = isolation
        self.egress = egress
        self.limits = dict(limits or {})
        self._tools: Tools | None = None
        self._warned = False

    @property
    def tools(self) -> Tools | None:
        if self.isolation == "unsafe-none":
            return None
        if self._tools is None:
            self._tools = find_tools()
        return self._tools

    def check(self) -> None:
        """Refuse to go on without the isolation tools (raises
        :class:`~cofounder_sandbox.jail.IsolationUnavailable` saying what to install)."""
        if self.isolation == "unsafe-none":
            self._warn()
        else:
            assert self.tools is not None

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            _log.warning(
                "sandbox_isolation_off",
                detail="SANDBOX_ISOLATION=unsafe-none: builds run as this user on this host's "
                "network and can read and change anything it can; for development only",
            )

    def limits_for(self, tier: str) -> Limits:
        return self.limits.get(tier) or self.limits.get("default") or Limits()

    async def create(self, *, build_id: str, metadata: Mapping[str, str]) -> LocalSandbox:
        self.check()
        sandbox_id = f"local-{build_id[:8]}-{secrets.token_hex(4)}"
        home = self.root / sandbox_id
        (home / "project").mkdir(parents=True)
        os.chmod(home, 0o700)  # bubblewrap mounts its folders: nobody else needs to reach them
        rootless = os.geteuid() != 0 or self.isolation == "unsafe-none"
        uid = os.getuid() if rootless else _UID_BASE + secrets.randbelow(_UID_SPAN)
        gid = os.getgid() if rootless else uid
        state: dict[str, Any] = {
            "build_id": build_id,
            "metadata": dict(metadata),
            "status": "running",
            "jail": JailState(uid=uid, gid=gid, port=_free_port()).to_json(),
        }
        sandbox = LocalSandbox(self, sandbox_id, state)
        sandbox._save()
        for attempt in range(_PORT_ATTEMPTS):
            try:
                await sandbox.jail.start()
            except IsolationUnavailable as exc:
                # The port was free when picked and was taken before pasta bound it (by an
                # outgoing connection's ephemeral port, or another runner's sandbox): another.
                if "Failed to bind" not in str(exc) or attempt == _PORT_ATTEMPTS - 1:
                    raise
                sandbox.jail.state.port = _free_port()
                sandbox._save()
            else:
                break
        return sandbox

    def _state(self, sandbox_id: str) -> dict[str, Any]:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", sandbox_id):
            raise SandboxGone(f"not a local sandbox id: {sandbox_id!r}")
        path = self.root / sandbox_id / "sandbox.json"
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            raise SandboxGone(f"local sandbox {sandbox_id} does not exist") from None
        return state

    async def files_of(self, sandbox_id: str) -> LocalSandbox:
        """A sandbox's files, even once it was killed (its folder stays until it is removed):
        what a final snapshot reads when the build's end already killed the sandbox. Running a
        command in it raises :class:`SandboxGone`."""
        return LocalSandbox(self, sandbox_id, self._state(sandbox_id))

    async def connect(self, sandbox_id: str) -> LocalSandbox:
        state = self._state(sandbox_id)
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
