"""A persistent bash session on a child process: what the ``bash`` tool drives in the local sandbox.

Each command is handed to ``eval`` through a quoted here-document, so it can be any bash (syntax
errors included) without breaking the protocol, and state (``cd``, variables, functions) carries
over. A unique marker line with the exit status ends each command's output. Its stdin is
``/dev/null``, so a command that reads stdin cannot swallow the next one.

Timeouts: SIGINT goes to the shell and every process below it, as Ctrl-C would. The command runs
in a shell function and the shell's INT trap returns from it, so the rest of the command is
skipped and the shell lives on. Background jobs of a non-interactive shell ignore SIGINT (POSIX),
so a dev server started with ``&`` survives. If nothing answers within a few seconds, the session
is restarted and the caller is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from cofounder_sandbox.base import CommandResult

__all__ = ["ProcessShell", "descendants"]

_CHUNK: Final = 65_536
_KEEP: Final = 512 * 1024  # bytes of head and of tail kept of a command's output
_INTERRUPT_GRACE_S: Final = 3.0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``), children first."""
    out: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        try:
            text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
        except OSError:
            continue
        kids = [int(p) for p in text.split()]
        out.extend(kids)
        frontier.extend(kids)
    return out


class _Output:
    """A command's output, keeping the head and the tail when it is huge."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = _KEEP - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > _KEEP:
                cut = len(self.tail) - _KEEP
                self.dropped += cut
                del self.tail[:cut]

    def text(self) -> str:
        middle = f"\n[... {self.dropped} bytes of output dropped ...]\n" if self.dropped else ""
        return self.head.decode(errors="replace") + middle + self.tail.decode(errors="replace")


class ProcessShell:
    """``bash`` on a child process (optionally inside a wrapper such as bubblewrap)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        on_start: Callable[[int], None] | None = None,
        preexec: Callable[[], None] | None = None,
        wrapped: bool = False,
    ) -> None:
        self._argv = list(argv)
        self._cwd = cwd
        self._env = dict(env)
        self._on_start = on_start
        self._preexec = preexec
        self._wrapped = wrapped  # argv[0] is a wrapper (bubblewrap) whose child is the shell
        self._proc: asyncio.subprocess.Process | None = None
        self._pending = b""
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self._cwd,
            env=self._env,
            start_new_session=True,  # its own process group: pause and kill reach every child
            preexec_fn=self._preexec,
        )
        self._pending = b""
        # An interrupt (see _interrupt) ends the running command, not the shell: the command runs
        # in a function, and the trap returns from it.
        assert self._proc.stdin is not None
        self._proc.stdin.write(b"trap 'return 130 2>/dev/null' INT\n")
        if self._on_start is not None:
            self._on_start(self._proc.pid)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def run(self, command: str, *, timeout: float) -> CommandResult:
        async with self._lock:
            if self._proc is None or self._proc.returncode is not None:
                await self.start()
            proc = self._proc
            assert proc is not None
            assert proc.stdin is not None
            assert proc.stdout is not None
            tag = secrets.token_hex(8)
            done = f"__COFOUNDER_DONE_{tag}__:".encode()
            script = (
                "__cofounder_command() {\n"
                f"eval \"$(cat <<'__COFOUNDER_CMD_{tag}__'\n{command}\n__COFOUNDER_CMD_{tag}__\n)\""
                " </dev/null\n}\n"
                f"__cofounder_command; printf '\\n{done.decode()}%s\\n' \"$?\"\n"
            )
            output = _Output()
            try:
                proc.stdin.write(script.encode())
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                await self._restart()
                return CommandResult(
                    "the shell had exited; it was restarted, run the command again", 1
                )
            try:
                code = await asyncio.wait_for(self._read_until(proc, done, output), timeout)
            except TimeoutError:
                return await self._interrupt(proc, done, output, timeout)
            if code is None:
                await self._restart()
                return CommandResult(
                    output.text() + "\n(the shell exited; a new session was started)", 1
                )
            return CommandResult(output.text(), code)

    async def _read_until(
        self, proc: asyncio.subprocess.Process, done: bytes, output: _Output
    ) -> int | None:
        """Read up to the marker. The unread rest stays in ``self._pending`` even when this is
        cancelled by a timeout, so nothing printed before the timeout is lost."""
        assert proc.stdout is not None
        while True:
            buffer = self._pending
            at = buffer.find(done)
            if at >= 0:
                end = buffer.find(b"\n", at)
                if end >= 0:
                    body = buffer[:at]
                    if body.endswith(b"\n"):
                        body = body[:-1]
                    output.add(body)
                    self._pending = buffer[end + 1 :]
                    try:
                        return int(buffer[at + len(done) : end] or b"1")
                    except ValueError:
                        return 1
            else:
                # Keep enough of the end to find a marker split across reads.
                keep = len(done) + 32
                if len(buffer) > keep:
                    output.add(buffer[:-keep])
                    self._pending = buffer[-keep:]
            chunk = await proc.stdout.read(_CHUNK)
            if not chunk:
                output.add(self._pending)
                self._pending = b""
                return None
            self._pending += chunk

    async def _interrupt(
        self, proc: asyncio.subprocess.Process, done: bytes, output: _Output, timeout: float
    ) -> CommandResult:
        shell = [] if self._wrapped else [proc.pid]
        for pid in [*shell, *descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGINT)
        note = f"\n(the command timed out after {timeout:g} s and was interrupted)"
        try:
            await asyncio.wait_for(self._read_until(proc, done, output), _INTERRUPT_GRACE_S)
        except TimeoutError:
            await self._restart()
            note = (
                f"\n(the command timed out after {timeout:g} s and did not stop when interrupted; "
                "the shell was restarted: working directory and variables are reset)"
            )
        return CommandResult(output.text() + note, None, timed_out=True)

    async def _restart(self) -> None:
        await self.close()
        await self.start()

    async def close(self) -> None:
        proc = self._proc
        self._proc = None
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        # The shell only: background jobs it started (a dev server) keep running in the sandbox.
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
