"""The ``bash`` tool's session in a local sandbox: one process per command, state carried over.

A persistent shell that frames results in its own output can be lied to: the command runs in
that shell, so it can read the end-of-command marker (``declare -f``) and print it, or leave a
background job that writes into the next command's output. Here nothing the sandbox writes
decides where a result ends:

- each command is a fresh ``bash`` entered into the sandbox, with its own output pipe; the
  command is over when that process exits, and its exit status comes from the kernel;
- the session's state (working directory, variables, functions, aliases) is saved by the
  command's shell when it exits and loaded by the next one, from a file inside the sandbox
  (the sandbox may edit it; it is its own state);
- what a background job prints after its command ended is read and dropped, never shown as part
  of another command's result. It is read at :data:`_BACKGROUND_BYTES_PER_S` at most (the job
  waits on a full pipe meanwhile, as on a slow terminal): a job printing as fast as it can
  (``yes &``) used to cost the runner half a core. A session keeps at most
  :data:`_MAX_BACKGROUND_PIPES` such pipes open; past that a new one is closed at once (its
  job's next write fails), so commands that hand their pipes on cannot pin the runner's
  descriptors;
- a timeout interrupts (SIGINT), then kills (SIGKILL) every process that appeared in the sandbox
  while the command ran, including ones that called ``setsid``, forked twice or ignore SIGINT.
  Processes started by earlier commands (a dev server) are left alone. A command whose caller
  is cancelled (its drive lost the build's lease) is killed the same way, without the SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from cofounder_sandbox import spawn
from cofounder_sandbox.base import CommandResult
from cofounder_sandbox.jail import Jail, Proc
from cofounder_sandbox.output import BoundedOutput

__all__ = ["SandboxShell"]

_CHUNK: Final = 65_536
_INTERRUPT_GRACE_S: Final = 3.0
_SETTLE_S: Final = 0.05  # how long output is still gathered after the command's process exits
#: How fast a background job's output is read (and dropped) once its command has ended.
_BACKGROUND_BYTES_PER_S: Final = 64 * 1024
#: Pipes of ended commands a session keeps open for their background jobs.
_MAX_BACKGROUND_PIPES: Final = 16

#: Loads the session, reads the command from stdin (stdin is then /dev/null), runs it, and saves
#: the session when the shell exits (``exit`` in the command included).
_PRELUDE: Final = r"""
__cofounder_state=$1
__cofounder_cmd=$(cat; printf x)
__cofounder_cmd=${__cofounder_cmd%x}
exec </dev/null
if [ -r "$__cofounder_state" ]; then . "$__cofounder_state" >/dev/null 2>&1; fi
__cofounder_skip='^declare -[a-zA-Z]*r|^declare -[-a-zA-Z]* (BASH|BASHOPTS|BASHPID|BASH_[A-Z_]+'
__cofounder_skip+='|COLUMNS|COMP_[A-Z]+|DIRSTACK|EPOCHREALTIME|EPOCHSECONDS|EUID|FUNCNAME|GROUPS'
__cofounder_skip+='|HISTCMD|HOSTNAME|HOSTTYPE|IFS|LINENO|LINES|MACHTYPE|OLDPWD|OPTERR|OPTIND|OSTYPE'
__cofounder_skip+='|PIPESTATUS|PPID|PS4|PWD|RANDOM|SECONDS|SHELLOPTS|SHLVL|SRANDOM|UID|_'
__cofounder_skip+='|__cofounder_[a-z]+)='
__cofounder_save() {
  {
    declare -p 2>/dev/null | grep -Ev "$__cofounder_skip"
    for __cofounder_f in $(compgen -A function); do
      [ "$__cofounder_f" = __cofounder_save ] || declare -f "$__cofounder_f"
    done
    alias -p
    printf 'cd -- %q\n' "$PWD"
  } > "$__cofounder_state.tmp" 2>/dev/null && mv -f "$__cofounder_state.tmp" "$__cofounder_state"
}
trap '__cofounder_s=$?; __cofounder_save; exit $__cofounder_s' EXIT
eval "$__cofounder_cmd"
"""


class SandboxShell:
    """A ``bash`` session in a :class:`~cofounder_sandbox.jail.Jail` (see the module docstring)."""

    def __init__(
        self,
        jail: Jail,
        *,
        env: Mapping[str, str],
        ready: Callable[[], Awaitable[None]],
        session: str | None = None,
        browser: bool = False,
    ) -> None:
        self._jail = jail
        self._browser = browser  # a browser's address space (the screenshot tool's one-off)
        self._ready = ready  # the namespaces running (made again if they died), or SandboxGone
        self._env = dict(env)
        self._state = f"/tmp/.cofounder-shell-{session or secrets.token_hex(8)}"  # noqa: S108
        self._lock = asyncio.Lock()
        self._open: dict[_Command, None] = {}  # their pipes held by background jobs, oldest first

    async def run(self, command: str, *, timeout: float) -> CommandResult:
        async with self._lock:
            await self._ready()
            before = self._jail.members()
            argv, fds = self._jail.command(
                ["/bin/bash", "--noprofile", "--norc", "-c", _PRELUDE, "bash", self._state],
                self._env,
            )
            output = BoundedOutput()
            loop = asyncio.get_running_loop()
            try:
                # Popen without a preexec_fn, so with vfork: the jail's wrapper enters the
                # cgroup and sets the limits. loop.subprocess_exec under uvloop forks the whole
                # runner for each command (~15 ms of its CPU; see cofounder_sandbox.spawn).
                proc = subprocess.Popen(  # noqa: ASYNC220 - returns once the child has exec'd
                    self._jail.wrap(argv, browser=self._browser),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=str(self._jail.home / "project"),
                    env=spawn.CLEAN_ENV,
                    start_new_session=True,
                    pass_fds=fds,
                    close_fds=True,
                )
            finally:
                for fd in fds:
                    os.close(fd)
            self._jail.track(proc.pid)
            running = _Command(proc, output, loop)
            await running.start(command.encode())
            try:
                try:
                    await asyncio.wait_for(asyncio.shield(running.exited), timeout)
                except TimeoutError:
                    note = await self._time_out(running, before, timeout)
                    await self._settle(running)
                    return CommandResult(output.text() + note, None, timed_out=True)
            except asyncio.CancelledError:
                # The caller gave up on it (its drive lost the build, or is stopping), maybe
                # while it was being interrupted: nothing it started may go on in a sandbox
                # that another drive may now use.
                self._kill(running, before)
                running.close()
                raise
            await self._settle(running)
            return CommandResult(output.text(), proc.returncode)

    async def _time_out(self, running: _Command, before: set[Proc], timeout: float) -> str:
        """Ctrl-C for what the command started; then SIGKILL for whatever is left of it."""
        self._signal_started(before, running.proc.pid, signal.SIGINT)
        note = f"\n(the command timed out after {timeout:g} s and was interrupted)"
        try:
            await asyncio.wait_for(asyncio.shield(running.exited), _INTERRUPT_GRACE_S)
        except TimeoutError:
            note = (
                f"\n(the command timed out after {timeout:g} s and did not stop when "
                "interrupted; it was killed)"
            )
        # Whatever it started and left behind goes too, asked to stop or not.
        for _ in range(3):
            if not self._signal_started(before, running.proc.pid, signal.SIGKILL):
                break
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            running.proc.kill()
        await running.exited
        return note

    def _kill(self, running: _Command, before: set[Proc]) -> None:
        """SIGKILL for the command and all it started, at once (no await: its caller is being
        cancelled). Three passes catch what forked while the first was sent; the command's
        process is reaped when its exit is seen."""
        for _ in range(3):
            if not self._signal_started(before, running.proc.pid, signal.SIGKILL):
                break
        with contextlib.suppress(ProcessLookupError):
            running.proc.kill()

    def _signal_started(self, before: set[Proc], pid: int, sig: signal.Signals) -> bool:
        """Signal what the command started; whether anything was left to signal."""
        if self._jail.mode == "unsafe-none":
            # No pid namespace to look in: the command's process group is the best there is.
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                return False
            return True
        started = self._jail.members() - before
        self._jail.send(started, sig)
        return bool(started)

    async def _settle(self, running: _Command) -> None:
        """Gather what is already written, then drop the rest: a background job of the command
        may hold the pipe open (and write to it) for as long as it lives. Its pipe stays open
        (drained) so the job does not die of a broken pipe."""
        try:
            await asyncio.wait_for(asyncio.shield(running.closed), _SETTLE_S)
        except TimeoutError:
            running.output.closed = True
            running.throttle()
            self._open[running] = None
            running.closed.add_done_callback(lambda _: self._open.pop(running, None))
            if len(self._open) > _MAX_BACKGROUND_PIPES:
                # This one goes, not an older one: that is likely the dev server the preview
                # needs, which would die of a broken pipe at its next log line.
                self._open.pop(running)
                running.close()
        else:
            running.close()

    async def close(self) -> None:
        for running in list(self._open):
            running.close()
        self._open.clear()


class _Command(asyncio.Protocol):
    """One command's process: its output (the protocol of its output pipe), its exit (through
    a pidfd on the loop, else a short poll), and the end of its output pipe (which comes later
    when a background job holds it). ``asyncio.subprocess.Process.wait`` waits for the pipes
    too, so it cannot tell when the command itself is over."""

    def __init__(
        self, proc: subprocess.Popen[bytes], output: BoundedOutput, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.proc = proc
        self.output = output
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._reader: asyncio.ReadTransport | None = None
        self._poll: asyncio.Task[None] | None = None
        self._throttled = False

    async def start(self, command: bytes) -> None:
        """Read its output, write ``command`` to its stdin (then closed), watch for its end."""
        loop, proc = self._loop, self.proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            self._reader, _ = await loop.connect_read_pipe(lambda: self, proc.stdout)
            stdin, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, proc.stdin)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            raise
        stdin.write(command)
        stdin.close()
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (OSError, AttributeError):  # before Linux 5.3: poll
            self._poll = asyncio.create_task(self._polled())
            return

        def readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._ended()

        loop.add_reader(pidfd, readable)

    async def _polled(self) -> None:
        while self.proc.poll() is None:  # noqa: ASYNC110 - a process, not a flag
            await asyncio.sleep(0.01)
        self._ended()

    def _ended(self) -> None:
        self.proc.wait()  # it has exited: reaped at once, its returncode set
        if not self.exited.done():
            self.exited.set_result(None)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def throttle(self) -> None:
        """From now on, read at :data:`_BACKGROUND_BYTES_PER_S` at most (see the module
        docstring): after each read, pause for as long as that many bytes are worth."""
        self._throttled = True

    def data_received(self, data: bytes) -> None:
        self.output.add(data)
        reader = self._reader
        if self._throttled and reader is not None and not reader.is_closing():
            reader.pause_reading()
            self._loop.call_later(len(data) / _BACKGROUND_BYTES_PER_S, self._resume)

    def _resume(self) -> None:
        reader = self._reader
        if reader is not None and not reader.is_closing():
            reader.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
