"""The E2B sandbox, through the official SDK (``e2b.AsyncSandbox``).

- create: the template, a timeout and metadata (build and project ids); then ``set_timeout`` to
  the configured hour, counted from now;
- connect by id: a paused sandbox resumes; a missing one is :class:`SandboxGone`;
- pause (budget sleep), kill (failure, cancel), ``get_host(port)`` for preview URLs;
- commands: the bash tool's session is emulated over one-off commands (E2B commands do not keep
  a shell between calls): the working directory and exported variables are saved in the sandbox
  after each command and restored before the next, in a file of that session's own (a restarted
  session starts afresh). Long-running servers must run in the background (``nohup ... &``), as
  the system prompt says; ``$PORT`` is 3000 (the template's preview port) unless the sandbox sets
  it. The SDK's own command timeout is ours; output is gathered as envd streams it, so a command
  cut by its timeout still shows what it printed. Each command runs in a process group of its
  own, under a limit of its own a little past the timeout: a command cut by its timeout, or
  whose caller is cancelled (its drive lost the build's lease), is killed with all it started,
  where envd would leave it running (its kill, and its deadline, reach the first process only);
  a command whose runner died is killed by its own limit;
- a sandbox that is gone (killed, expired) makes every call raise :class:`SandboxGone` (the SDK's
  ``SandboxNotRunningException`` / ``NotFoundException`` for the sandbox);
- glob and grep run inside the sandbox (``python3`` in the template), as they do in the local
  sandbox (:mod:`cofounder_sandbox.searching`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import secrets
import shlex
from collections.abc import Iterator, Mapping
from typing import Any, Final

from e2b import (
    AsyncCommandHandle,
    AsyncSandbox,
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    TimeoutException,
)
from e2b.exceptions import SandboxNotFoundException, SandboxNotRunningException
from e2b.sandbox.filesystem.filesystem import FileType

from cofounder_contracts.events import SandboxKind
from cofounder_sandbox.base import (
    MAX_READ_BYTES,
    PROJECT_DIR,
    CommandResult,
    FileTooLarge,
    SandboxGone,
)
from cofounder_sandbox.output import BoundedOutput
from cofounder_sandbox.searching import SearchesInside

__all__ = ["E2BSandbox", "E2BSandboxes"]

_STATE: Final = "/home/user/.cofounder"
_TEMPLATE_PORT: Final = 3000
_PREVIEW_WAIT_S: Final = 10.0  # as long as the local sandbox waits for a server to listen
_KILL_TIMEOUT_S: Final = 10.0


#: Runs a command (``$1``) under coreutils' ``timeout``, which puts it in a process group of its
#: own and kills that whole group at ``{limit}`` seconds, even if nobody is left to ask (the
#: runner died); the group's id is in the file ``{group}`` while it runs. It does not start
#: once ``{group}.stop`` exists. Without ``timeout`` in the template, it runs in envd's group.
_OWN_GROUP: Final = (
    "[ -e {group}.stop ] && {{ rm -f {group}.stop; exit 137; }}; "
    'if command -v timeout >/dev/null; then timeout -s KILL {limit} bash -c "$1" & '
    'else bash -c "$1" & fi; '
    "__p=$!; echo $__p > {group}; wait $__p 2>/dev/null; __rc=$?; rm -f {group}; exit $__rc"
)
#: Kills such a command's group (or, without one, its process). The command may not have
#: written its group yet (cancelled while it was being started): the stop file keeps it from
#: starting later, and its group is waited for a second.
_KILL_GROUP: Final = (
    "touch {group}.stop; for _ in 1 2 3 4 5 6 7 8 9 10; do if [ -s {group} ]; then "
    '__p=$(cat {group}); kill -KILL -- "-$__p" 2>/dev/null || kill -KILL "$__p" 2>/dev/null; '
    "rm -f {group} {group}.stop; break; fi; sleep 0.1; done"
)
#: How much longer than the SDK's deadline the command's own ``timeout`` waits: at the deadline
#: the runner kills the group (envd's kill reaches the wrapper only); the command's own limit
#: is for a runner that is no longer there to do it.
_OWN_LIMIT_GRACE_S: Final = 5.0


def _in_own_group(command: str, group: str, timeout: float) -> str:
    """``command`` in a process group of its own (see :data:`_OWN_GROUP`), so that all it
    started can be killed together (:meth:`E2BSandbox.run`). The command is passed once, as an
    argument: the kernel limits one argument to 128 KiB."""
    wrapper = _OWN_GROUP.format(group=group, limit=f"{timeout + _OWN_LIMIT_GRACE_S:.3f}")
    return f"bash -c {shlex.quote(wrapper)} cofounder-command {shlex.quote(command)}"


@contextlib.contextmanager
def _gone(sandbox_id: str) -> Iterator[None]:
    """The SDK's "this sandbox is no more" as :class:`SandboxGone`."""
    try:
        yield
    except (SandboxNotRunningException, SandboxNotFoundException) as exc:
        raise SandboxGone(f"E2B sandbox {sandbox_id} is gone: {exc}") from exc


class _E2BShell:
    """The bash tool's session over one-off commands (see the module docstring)."""

    def __init__(self, sandbox: E2BSandbox) -> None:
        self._sandbox = sandbox
        self._state = f"{_STATE}/shell-{secrets.token_hex(6)}"

    async def run(self, command: str, *, timeout: float) -> CommandResult:
        state = self._state
        script = (
            f'mkdir -p {state}; cd "$(cat {state}/cwd 2>/dev/null || echo {PROJECT_DIR})"; '
            f': "${{PORT:=3000}}"; export PORT; '
            f"[ -f {state}/env ] && . {state}/env >/dev/null 2>&1\n"
            f"{{\n{command}\n}} 2>&1\n"
            f"__rc=$?; pwd > {state}/cwd; export -p > {state}/env; exit $__rc"
        )
        return await self._sandbox.run(script, timeout=timeout)

    async def close(self) -> None:
        with contextlib.suppress(SandboxGone):
            await self._sandbox.run(f"rm -rf {self._state}", timeout=30)


class E2BSandbox(SearchesInside):
    """One E2B sandbox."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    @property
    def id(self) -> str:
        return str(self._sandbox.sandbox_id)

    @property
    def kind(self) -> SandboxKind:
        return SandboxKind.E2B

    async def open_shell(self) -> _E2BShell:
        return _E2BShell(self)

    async def run(self, command: str, *, timeout: float, browser: bool = False) -> CommandResult:
        # ``browser`` changes nothing here: the template's VM sets no address-space limit.
        # stdout and stderr in the order envd streamed them, bounded: the SDK keeps none of it
        # (retain_output=False), since a command printing for its whole timeout would fill
        # the runner's memory.
        output = BoundedOutput()
        group = f"/tmp/.cofounder-group-{secrets.token_hex(6)}"  # noqa: S108 - the sandbox's
        handle: AsyncCommandHandle[None] | None = None
        try:
            with _gone(self.id):
                # The start is shielded: cancelled halfway, the SDK's stream is left with a
                # failed task nobody reads, and no pid to kill.
                starting = asyncio.ensure_future(
                    self._sandbox.commands.run(
                        _in_own_group(command, group, timeout),
                        background=True,
                        timeout=timeout,
                        cwd=PROJECT_DIR,
                        on_stdout=output.add_text,
                        on_stderr=output.add_text,
                        retain_output=False,
                    )
                )
                try:
                    handle = await asyncio.shield(starting)
                    result = await handle.wait()
                except asyncio.CancelledError:
                    # The caller gave up on it (its drive lost the build): envd would let it
                    # run on, in a sandbox another drive may now use.
                    await asyncio.shield(self._stop(starting, group))
                    raise
        except CommandExitException as exc:
            return CommandResult(output.text(), exc.exit_code)
        except TimeoutException:
            # envd killed the command's first process at the deadline; the rest goes too.
            await asyncio.shield(self._kill_group(handle, group))
            text = output.text()
            return CommandResult(
                f"{text}\n(the command timed out after {timeout:g} s)".lstrip("\n"),
                None,
                timed_out=True,
            )
        return CommandResult(output.text(), result.exit_code)

    async def _stop(self, starting: asyncio.Future[AsyncCommandHandle[None]], group: str) -> None:
        """Kill a command given up on, once its start has finished (bounded)."""
        handle = None
        with contextlib.suppress(Exception):
            handle = await asyncio.wait_for(asyncio.shield(starting), _KILL_TIMEOUT_S)
        if not starting.done():
            starting.cancel()  # the start itself hangs: the stop file keeps it from running
        elif not starting.cancelled():
            starting.exception()  # retrieved
        await self._kill_group(handle, group)

    async def _kill_group(self, handle: AsyncCommandHandle[None] | None, group: str) -> None:
        """SIGKILL for the command's process group, then for the wrapper envd started: envd's
        own kill signals that process alone, and what it started would go on until its own
        limit. Best effort: a sandbox that is gone has nothing left to kill."""
        with contextlib.suppress(Exception):
            await self._sandbox.commands.run(
                _KILL_GROUP.format(group=group),
                timeout=_KILL_TIMEOUT_S,
                request_timeout=_KILL_TIMEOUT_S,
            )
        if handle is not None:
            with contextlib.suppress(Exception):
                await self._sandbox.commands.kill(handle.pid, request_timeout=_KILL_TIMEOUT_S)

    def internal_url(self, port: int) -> str:
        return f"http://localhost:{port}"

    async def read_file(self, path: str, *, limit: int = MAX_READ_BYTES) -> bytes:
        if not await self.exists(path):
            raise FileNotFoundError(path)
        with _gone(self.id):
            info = await self._sandbox.files.get_info(path)
        if info.type == FileType.DIR:
            raise IsADirectoryError(path)
        if info.size > limit:
            raise FileTooLarge(errno.EFBIG, f"{info.size} bytes, over {limit}", path)
        with _gone(self.id):
            try:
                data = bytes(await self._sandbox.files.read(path, format="bytes"))
            except InvalidArgumentException as exc:  # no regular file (envd's 400)
                raise OSError(errno.EINVAL, str(exc), path) from None
            except TimeoutException as exc:
                if type(exc) is not TimeoutException:
                    raise  # the sandbox not running or unreachable: _gone's
                # A FIFO read waits for a writer until the request's timeout.
                raise OSError(errno.ETIMEDOUT, f"reading it timed out: {exc}", path) from None
        if len(data) > limit:  # grew meanwhile
            raise FileTooLarge(errno.EFBIG, f"over {limit} bytes", path)
        return data

    async def write_file(self, path: str, data: bytes) -> None:
        with _gone(self.id):
            await self._sandbox.files.write(path, data)

    async def is_dir(self, path: str) -> bool:
        if not await self.exists(path):
            return False
        with _gone(self.id):
            info = await self._sandbox.files.get_info(path)
        return bool(info.type == FileType.DIR)

    async def exists(self, path: str) -> bool:
        with _gone(self.id):
            return bool(await self._sandbox.files.exists(path))

    async def list_dir(self, path: str, *, depth: int) -> list[str]:
        with _gone(self.id):
            entries = await self._sandbox.files.list(path, depth=depth)
        out = []
        for entry in entries:
            rel = entry.path.removeprefix(path.rstrip("/") + "/")
            if any(
                p.startswith(".") or p in {"node_modules", "__pycache__", ".venv"}
                for p in rel.split("/")
            ):
                continue
            out.append(entry.path + ("/" if entry.type == FileType.DIR else ""))
        return sorted(out)[:1000]

    async def preview_url(self, port: int) -> str:
        """E2B's public URL of ``port``, once something in the sandbox listens there (E2B's
        proxy would answer "port is not open" otherwise): checked from inside, as the local
        sandbox checks (waiting up to ten seconds for a server just started)."""
        # 3000 is the template's preview port, which $PORT names where the sandbox sets it.
        target = "${PORT:-3000}" if port == _TEMPLATE_PORT else str(int(port))
        probe = await self.run(
            f"for _ in $(seq {int(_PREVIEW_WAIT_S * 5)}); do "
            f"(exec 3<>/dev/tcp/127.0.0.1/{target}) 2>/dev/null && exit 0; sleep 0.2; done; exit 1",
            timeout=_PREVIEW_WAIT_S + 10,
        )
        if probe.exit_code != 0:
            raise ConnectionError(f"nothing is listening on port {port} in the sandbox")
        return f"https://{self._sandbox.get_host(port)}"

    async def pause(self) -> None:
        with _gone(self.id):
            await self._sandbox.pause()

    async def kill(self) -> None:
        await self._sandbox.kill()  # a sandbox already gone: False, not an error


class E2BSandboxes:
    """Creates and connects E2B sandboxes. ``api_url`` / ``domain`` point the SDK elsewhere
    (a self-hosted deployment, or the control-plane stub in tests)."""

    kind = SandboxKind.E2B

    def __init__(
        self,
        *,
        api_key: str,
        template: str,
        timeout_s: int = 3600,
        api_url: str | None = None,
        domain: str | None = None,
    ) -> None:
        self.template = template
        self.timeout_s = timeout_s
        self._opts: dict[str, Any] = {"api_key": api_key}
        if api_url:
            self._opts["api_url"] = api_url
        if domain:
            self._opts["domain"] = domain

    async def create(self, *, build_id: str, metadata: Mapping[str, str]) -> E2BSandbox:
        sandbox = await AsyncSandbox.create(
            template=self.template,
            timeout=self.timeout_s,
            metadata=dict(metadata),
            **self._opts,
        )
        await sandbox.set_timeout(self.timeout_s)
        return E2BSandbox(sandbox)

    async def connect(self, sandbox_id: str) -> E2BSandbox:
        try:
            sandbox = await AsyncSandbox.connect(sandbox_id, timeout=self.timeout_s, **self._opts)
        except NotFoundException as exc:
            raise SandboxGone(f"E2B sandbox {sandbox_id} is gone: {exc}") from exc
        return E2BSandbox(sandbox)

    async def close(self) -> None:
        return None
