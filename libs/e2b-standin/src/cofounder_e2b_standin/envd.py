# protobuf-py types a oneof's field name as a Literal, which a str variable is not.
# mypy: disable-error-code="arg-type"
"""envd, the daemon inside an E2B sandbox, over the SDK's own generated Connect servers.

The process and filesystem services are ``ProcessASGIApplication`` / ``FilesystemASGIApplication``
from the ``e2b`` package (``e2b.envd.*.*_connect``), served with the SDK's JSON codec: the paths,
the message types and the wire format are the ones the SDK's clients were generated from, not
copies. The sandbox a call is for comes from the ``E2b-Sandbox-Id`` header, as E2B's proxy routes
it; the access token from ``X-Access-Token``.

Process service: ``Start`` runs ``cmd args`` as a real process in the sandbox's namespaces
(:class:`cofounder_sandbox.jail.Jail`, the local sandbox's), streams a start event with its pid,
stdout and stderr as separate data events as they come, keep-alives at the interval the client
asks for (``Keepalive-Ping-Interval``) and an end event with its exit code and Go-style status
(``exit status 1``, ``signal: killed``). A call's ``Connect-Timeout-Ms`` is the process's
lifetime, as envd makes it: at the deadline the process is killed; a client that goes away
earlier leaves it running. ``SendSignal`` (SIGTERM, SIGKILL) and ``List`` work by pid.

Filesystem service: ``Stat``, ``ListDir`` (with depth), ``MakeDir``, ``Remove``, ``Move``; and the
HTTP ``/files`` routes (download; upload as octet-stream or multipart, answering the written
entries). Watchers are not implemented (the adapter does not use them).

Where it is not envd (each shown by a test in ``tests/test_standin.py``):

- pids are the host's (of the process entering the namespaces), not the sandbox's;
- a signal goes to the command's process group, not only to its first process;
- file RPCs and ``/files`` reach ``/home/user/project`` only (they run on the host, through
  :class:`~cofounder_sandbox.beneath.ProjectFiles`, which never leaves that folder); commands
  see the whole sandbox;
- ``Connect``, ``Update``, ``SendInput``, ``StreamInput``, ``CloseStdin`` and the watchers answer
  ``UNIMPLEMENTED``; entries carry no xattr metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import os
import posixpath
import shutil
import signal
import stat as stat_module
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.client_shared import ENVD_JSON_CODEC
from e2b.envd.filesystem import filesystem_pb
from e2b.envd.filesystem.filesystem_connect import Filesystem, FilesystemASGIApplication
from e2b.envd.process import process_pb
from e2b.envd.process.process_connect import Process, ProcessASGIApplication
from protobuf import Oneof
from protobuf.wkt import Timestamp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cofounder_sandbox.base import PROJECT_DIR
from cofounder_sandbox.beneath import Escape

if TYPE_CHECKING:
    from connectrpc.request import RequestContext

    from cofounder_e2b_standin.app import Record, Standin

__all__ = ["FilesystemService", "ProcessService", "files_routes", "rpc_apps"]

_T = TypeVar("_T")
_SETTLE_S: Final = 0.05  # output still gathered after the process exits (then its pipes close)
_KEEPALIVE_HEADER: Final = "keepalive-ping-interval"


def _status(returncode: int) -> tuple[int, bool, str]:
    """envd's end event fields from a return code, as Go's ``ProcessState`` reports them."""
    if returncode < 0:
        name = signal.Signals(-returncode).name.removeprefix("SIG").lower()
        return -1, False, f"signal: {'killed' if name == 'kill' else name}"
    return returncode, True, f"exit status {returncode}"


@dataclass
class _Running:
    """A process started through ``Start``: its output queue while a client streams it."""

    pid: int
    config: process_pb.ProcessConfig
    transport: asyncio.SubprocessTransport
    events: asyncio.Queue[tuple[str, bytes]] = field(default_factory=asyncio.Queue)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    detached: bool = False  # its client went away: output is dropped, as nobody reads it
    deadline_passed: bool = False


class _Pipes(asyncio.SubprocessProtocol):
    def __init__(self) -> None:
        self.running: _Running | None = None
        self.early: list[tuple[str, bytes]] = []

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        item = ("stdout" if fd == 1 else "stderr", data)
        if self.running is None:
            self.early.append(item)
        elif not self.running.detached:
            self.running.events.put_nowait(item)

    def process_exited(self) -> None:
        if self.running is not None:
            self.running.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.running is not None:
            self.running.closed.set()


def _data(kind: str, chunk: bytes) -> process_pb.StartResponse:
    return process_pb.StartResponse(
        event=process_pb.ProcessEvent(
            event=Oneof("data", process_pb.ProcessEvent.DataEvent(output=Oneof(kind, chunk)))
        )
    )


class ProcessService(Process):
    """``process.Process`` (see the module docstring); the methods not here are the generated
    protocol's, answering ``UNIMPLEMENTED``."""

    def __init__(self, standin: Standin) -> None:
        self._standin = standin
        self._reapers: set[asyncio.Future[None]] = set()

    def _record(self, ctx: RequestContext[Any, Any]) -> Record:
        return self._standin.envd_record(ctx.request_headers.get("e2b-sandbox-id", ""))

    async def start(
        self, request: process_pb.StartRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[process_pb.StartResponse]:
        record = self._record(ctx)
        if request.has_field("pty"):
            raise ConnectError(Code.UNIMPLEMENTED, "the E2B stand-in has no PTY")
        config = request.process or process_pb.ProcessConfig()
        jail = record.local.jail
        await jail.start()
        env = {**self._standin.template_env(record), **dict(config.envs)}
        cwd = config.cwd if config.has_field("cwd") and config.cwd else "/home/user"
        argv, fds = jail.command(["/usr/bin/env", f"--chdir={cwd}", config.cmd, *config.args], env)
        loop = asyncio.get_running_loop()
        try:
            transport, pipes = await loop.subprocess_exec(
                _Pipes,
                *argv,
                stdin=asyncio.subprocess.PIPE if request.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=str(jail.home / "project"),
                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                start_new_session=True,
                preexec_fn=jail.preexec(),
                pass_fds=fds,
            )
        finally:
            for fd in fds:
                os.close(fd)
        pid = transport.get_pid()
        jail.track(pid)
        running = _Running(pid=pid, config=config, transport=transport)
        pipes.running = running
        for item in pipes.early:
            running.events.put_nowait(item)
        if transport.get_returncode() is not None:
            running.exited.set()
        record.processes[pid] = running
        timeout_ms = ctx.timeout_ms
        killer = loop.call_later(timeout_ms / 1000, self._kill, running) if timeout_ms else None
        try:
            yield process_pb.StartResponse(
                event=process_pb.ProcessEvent(
                    event=Oneof("start", process_pb.ProcessEvent.StartEvent(pid=pid))
                )
            )
            async for response in self._stream(record, running, ctx):
                yield response
        finally:
            running.detached = True  # the client went away or the stream ended: nobody reads
            reaper = asyncio.ensure_future(self._reap(record, running, killer))
            self._reapers.add(reaper)
            reaper.add_done_callback(self._reapers.discard)

    async def _reap(
        self, record: Record, running: _Running, killer: asyncio.TimerHandle | None
    ) -> None:
        """Once the process and its pipes are done: its transport closed, its pid forgotten."""
        await running.exited.wait()
        if killer is not None:
            killer.cancel()
        await running.closed.wait()
        running.transport.close()
        record.processes.pop(running.pid, None)

    async def _stream(
        self, record: Record, running: _Running, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[process_pb.StartResponse]:
        interval = float(ctx.request_headers.get(_KEEPALIVE_HEADER, "0") or 0)
        exited = asyncio.ensure_future(running.exited.wait())
        try:
            while not exited.done() or not running.events.empty():
                getter = asyncio.ensure_future(running.events.get())
                done, _ = await asyncio.wait(
                    {getter, exited},
                    timeout=interval or None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if getter in done:
                    yield _data(*getter.result())
                    continue
                getter.cancel()
                if not done:
                    yield process_pb.StartResponse(
                        event=process_pb.ProcessEvent(
                            event=Oneof("keepalive", process_pb.ProcessEvent.KeepAlive())
                        )
                    )
        finally:
            exited.cancel()
        # What is still in the pipes; a background job may hold them open: not waited for.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(running.closed.wait(), _SETTLE_S)
        while not running.events.empty():
            yield _data(*running.events.get_nowait())
        if record.state != "running":  # killed under it: the proxy's connection ends
            raise ConnectError(Code.UNAVAILABLE, f"The sandbox {record.sandbox_id} was not found")
        if running.deadline_passed:
            raise ConnectError(Code.DEADLINE_EXCEEDED, "context deadline exceeded")
        code, exited_normally, status = _status(running.transport.get_returncode() or 0)
        yield process_pb.StartResponse(
            event=process_pb.ProcessEvent(
                event=Oneof(
                    "end",
                    process_pb.ProcessEvent.EndEvent(
                        exit_code=code, exited=exited_normally, status=status
                    ),
                )
            )
        )

    def _kill(self, running: _Running) -> None:
        """The call's deadline passed: the process goes (envd runs it under that deadline), and
        the stream ends with ``deadline_exceeded`` (connect-go's answer once the handler's
        context is done), which the SDK raises as ``TimeoutException``."""
        running.deadline_passed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.pid, signal.SIGKILL)

    async def list(
        self, request: process_pb.ListRequest, ctx: RequestContext[Any, Any]
    ) -> process_pb.ListResponse:
        record = self._record(ctx)
        return process_pb.ListResponse(
            processes=[
                process_pb.ProcessInfo(config=r.config, pid=pid)
                for pid, r in record.processes.items()
                if not r.exited.is_set()
            ]
        )

    async def send_signal(
        self, request: process_pb.SendSignalRequest, ctx: RequestContext[Any, Any]
    ) -> process_pb.SendSignalResponse:
        record = self._record(ctx)
        selector = request.process.selector if request.process else None
        pid = selector.value if isinstance(selector, Oneof) and selector.field == "pid" else -1
        running = record.processes.get(int(pid))
        if running is None or running.exited.is_set():
            raise ConnectError(Code.NOT_FOUND, f"process with pid {pid} not found")
        sig = signal.SIGKILL if request.signal == process_pb.Signal.SIGKILL else signal.SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.pid, sig)
        return process_pb.SendSignalResponse()


def _sandbox_rel(path: str) -> str:
    """A sandbox path relative to the project folder; file RPCs reach nothing else."""
    normal = posixpath.normpath(path if path.startswith("/") else f"/home/user/{path}")
    if normal == PROJECT_DIR:
        return ""
    if not normal.startswith(PROJECT_DIR + "/"):
        raise ConnectError(
            Code.PERMISSION_DENIED,
            f"{path}: the E2B stand-in's file calls reach {PROJECT_DIR} only",
        )
    return normal.removeprefix(PROJECT_DIR + "/")


def _entry(path: str, info: os.stat_result) -> filesystem_pb.EntryInfo:
    kind = (
        filesystem_pb.FileType.DIRECTORY
        if stat_module.S_ISDIR(info.st_mode)
        else filesystem_pb.FileType.FILE
    )
    modified = Timestamp.from_datetime(datetime.fromtimestamp(info.st_mtime, UTC))
    return filesystem_pb.EntryInfo(
        name=posixpath.basename(path),
        type=kind,
        path=path,
        size=info.st_size,
        mode=info.st_mode & 0o777,
        permissions=stat_module.filemode(info.st_mode),
        owner="user",
        group="user",
        modified_time=modified,
    )


def _file_errors(call: Callable[[], _T], path: str) -> _T:
    try:
        return call()
    except (Escape, PermissionError) as exc:
        raise ConnectError(Code.PERMISSION_DENIED, f"{path}: {exc}") from None
    except FileNotFoundError:
        raise ConnectError(Code.NOT_FOUND, f"path not found: {path}") from None
    except NotADirectoryError:
        raise ConnectError(Code.INVALID_ARGUMENT, f"path is not a directory: {path}") from None


class FilesystemService(Filesystem):
    """``filesystem.Filesystem`` (see the module docstring); the watchers are the generated
    protocol's, answering ``UNIMPLEMENTED``."""

    def __init__(self, standin: Standin) -> None:
        self._standin = standin

    def _record(self, ctx: RequestContext[Any, Any]) -> Record:
        return self._standin.envd_record(ctx.request_headers.get("e2b-sandbox-id", ""))

    def _stat(self, record: Record, path: str) -> filesystem_pb.EntryInfo:
        rel = _sandbox_rel(path)
        info = _file_errors(lambda: record.local.files.stat(rel), path)
        if info is None:
            raise ConnectError(Code.NOT_FOUND, f"path not found: {path}")
        return _entry(posixpath.normpath(path), info)

    async def stat(
        self, request: filesystem_pb.StatRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.StatResponse:
        return filesystem_pb.StatResponse(entry=self._stat(self._record(ctx), request.path))

    async def list_dir(
        self, request: filesystem_pb.ListDirRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.ListDirResponse:
        record = self._record(ctx)
        top = self._stat(record, request.path)
        if top.type != filesystem_pb.FileType.DIRECTORY:
            raise ConnectError(Code.INVALID_ARGUMENT, f"path is not a directory: {request.path}")
        base = _sandbox_rel(request.path)
        depth = request.depth or 1

        def within(rel: str) -> bool:
            inner = rel[len(base) :].lstrip("/") if base else rel
            return inner.count("/") + 1 < depth

        def walk() -> list[filesystem_pb.EntryInfo]:
            out = []
            for rel, _ in record.local.files.walk(base, descend=within):
                info = record.local.files.stat(rel)
                if info is not None:
                    out.append(_entry(f"{PROJECT_DIR}/{rel}", info))
            return out

        entries = await asyncio.to_thread(_file_errors, walk, request.path)
        return filesystem_pb.ListDirResponse(entries=entries)

    async def make_dir(
        self, request: filesystem_pb.MakeDirRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.MakeDirResponse:
        record = self._record(ctx)
        rel = _sandbox_rel(request.path)
        if record.local.files.stat(rel) is not None:
            raise ConnectError(Code.ALREADY_EXISTS, f"path already exists: {request.path}")
        _file_errors(lambda: record.local.files.makedirs(rel), request.path)
        return filesystem_pb.MakeDirResponse(entry=self._stat(record, request.path))

    def _host(self, record: Record, path: str) -> str:
        """The host path of an entry whose parent stays inside the project (checked)."""
        rel = _sandbox_rel(path)
        parent = rel.rpartition("/")[0]
        info = _file_errors(lambda: record.local.files.stat(parent), path)
        if info is None:
            raise ConnectError(Code.NOT_FOUND, f"path not found: {path}")
        workspace = os.path.realpath(record.local.workspace)
        real_parent = os.path.realpath(os.path.join(workspace, parent))
        if real_parent != workspace and not real_parent.startswith(workspace + "/"):
            raise ConnectError(Code.PERMISSION_DENIED, f"{path}: outside the project")
        return os.path.join(real_parent, rel.rpartition("/")[2])

    async def remove(
        self, request: filesystem_pb.RemoveRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.RemoveResponse:
        host = self._host(self._record(ctx), request.path)
        if os.path.isdir(host) and not os.path.islink(host):  # noqa: ASYNC240 - a local stat
            await asyncio.to_thread(shutil.rmtree, host)
        else:
            _file_errors(lambda: os.unlink(host), request.path)
        return filesystem_pb.RemoveResponse()

    async def move(
        self, request: filesystem_pb.MoveRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.MoveResponse:
        record = self._record(ctx)
        source = self._host(record, request.source)
        target = self._host(record, request.destination)
        _file_errors(lambda: os.rename(source, target), request.source)
        return filesystem_pb.MoveResponse(entry=self._stat(record, request.destination))


def rpc_apps(standin: Standin) -> dict[str, Any]:
    """The Connect applications by path prefix, with the SDK's JSON codec."""
    process = ProcessASGIApplication(ProcessService(standin), codecs=[ENVD_JSON_CODEC])
    files = FilesystemASGIApplication(FilesystemService(standin), codecs=[ENVD_JSON_CODEC])
    return {process.path: process, files.path: files}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def files_routes(standin: Standin) -> Callable[[Request], Any]:
    """``GET /files`` (download) and ``POST /files`` (upload) of envd's HTTP API."""

    async def files(request: Request) -> Response:
        try:
            record = standin.envd_record(request.headers.get("e2b-sandbox-id", ""))
            if request.method == "GET":
                return await _download(record, request.query_params.get("path", ""))
            return await _upload(record, request)
        except ConnectError as exc:
            status = {Code.NOT_FOUND: 404, Code.INVALID_ARGUMENT: 400}.get(exc.code, 403)
            return _error(status, exc.message)

    return files


async def _download(record: Record, path: str) -> Response:
    rel = _sandbox_rel(path)
    try:
        # envd sends a file whatever its size: the client bounds what it reads (get_info).
        data = await asyncio.to_thread(record.local.files.read_bytes, rel, limit=1 << 40)
    except FileNotFoundError:
        return _error(404, f"path '{path}' does not exist")
    except IsADirectoryError:
        return _error(400, f"path '{path}' is a directory")
    except (Escape, PermissionError) as exc:
        return _error(403, f"{path}: {exc}")
    except OSError as exc:  # no regular file (a FIFO, a socket)
        return _error(400, f"{path}: {exc}")
    return Response(data, media_type="application/octet-stream")


async def _upload(record: Record, request: Request) -> Response:
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        parts = [
            (part.get_filename() or "", part.get_payload(decode=True) or b"")
            for part in message.iter_parts()
        ]
        single = request.query_params.get("path")
        if single and len(parts) == 1:
            parts = [(single, parts[0][1])]
    else:
        parts = [(request.query_params.get("path", ""), body)]
    written = []
    for path, data in parts:
        rel = _sandbox_rel(path)
        try:
            await asyncio.to_thread(record.local.files.write_bytes, rel, bytes(data))
        except IsADirectoryError:
            return _error(400, f"path '{path}' is a directory")
        except (Escape, PermissionError, NotADirectoryError) as exc:
            return _error(403, f"{path}: {exc}")
        written.append({"name": posixpath.basename(path), "type": "file", "path": path})
    return JSONResponse(written)
