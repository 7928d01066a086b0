"""Starting the sandbox's short helper processes (``setsid``, ``pasta``, ``nsenter ip``) cheaply.

``asyncio.create_subprocess_exec`` under uvloop (the services' loop) starts a process with libuv,
which ``fork()``s the whole runner: its page tables copied, then every page the runner writes
until the child has exec'd faulted and copied. Measured on a runner-sized process (~170 MB
touched heap): about 6 ms of the runner's CPU and 8 ms of the child's per process, against
0.3 ms and 0.5 ms for ``subprocess.Popen``, which uses ``vfork()`` when no ``preexec_fn`` (nor
user or group change) is asked for. A sandbox start ran four such helpers: at 100 concurrent
builds that was most of the runner's CPU (py-spy, issue #18).

:func:`run` starts the process with ``Popen`` (so ``vfork``) on the loop's thread and waits for
it without a thread: its output through the loop's pipes, its end through a pidfd (Linux 5.3+;
else a short poll). A helper that needs a ``preexec_fn`` keeps ``create_subprocess_exec``.

Every process started here, and every command (``shell.py``), gets :data:`CLEAN_ENV`, never the
runner's environment: bubblewrap, the sandbox's init and the preview relay live beside the
sandbox's processes, and with a rootless runner under the same uid, so a command could read
their ``/proc/<pid>/environ`` (the model key, ``DATABASE_URL``...).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Final

__all__ = ["CLEAN_ENV", "Finished", "run"]

#: The whole environment of the sandbox's helpers and commands: the runner's holds secrets.
CLEAN_ENV: Final = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    stdout: bytes
    stderr: bytes


async def _drain(pipe: IO[bytes] | None) -> bytes:
    if pipe is None:
        return b""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await reader.read()
    finally:
        transport.close()


async def _exited(proc: subprocess.Popen[bytes]) -> int:
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (OSError, AttributeError):  # before Linux 5.3: poll
        while (code := proc.poll()) is None:  # noqa: ASYNC110 - a process, not a flag
            await asyncio.sleep(0.005)
        return code
    try:
        if proc.poll() is None:
            ended: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not ended.done():
                    ended.set_result(None)

            loop.add_reader(pidfd, readable)
            try:
                await ended
            finally:
                loop.remove_reader(pidfd)
        return proc.wait()
    finally:
        os.close(pidfd)


async def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    stdout: int | IO[bytes] = subprocess.PIPE,
    stderr: int | IO[bytes] = subprocess.PIPE,
    pass_fds: Sequence[int] = (),
    start_new_session: bool = False,
) -> Finished:
    """Run ``argv`` to its end: its exit status and what it wrote to the pipes asked for.
    ``input`` (small: it is written before the output is read) goes to its stdin, else stdin
    is ``/dev/null``. Cancelled, the process is killed."""
    # Popen returns once the child has exec'd (vfork): as quick as a non-blocking call.
    proc = subprocess.Popen(  # noqa: ASYNC220
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        pass_fds=tuple(pass_fds),
        start_new_session=start_new_session,
        close_fds=True,
        env=CLEAN_ENV,
    )
    try:
        if proc.stdin is not None:
            with proc.stdin, contextlib.suppress(BrokenPipeError):
                proc.stdin.write(input or b"")
        out, err = await asyncio.gather(_drain(proc.stdout), _drain(proc.stderr))
        code = await _exited(proc)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        raise
    return Finished(code, out, err)
