"""The namespaces that hold a local sandbox's processes, and how a command enters them.

A sandbox is one long-lived process tree made by bubblewrap: its own pid, mount, network, ipc and
uts namespaces (and a user namespace when the runner is not root), whose pid 1 only waits. Every
command then enters those namespaces (``nsenter``), drops to the sandbox's uid with no
capabilities, an empty bounding set and ``no_new_privs`` (``setpriv``), under resource limits,
and runs there. So:

- the file system is the host's system folders read-only (``/usr``, ``/etc`` and the ``/bin``,
  ``/lib`` links), a private ``/tmp``, and ``/home/user`` with the project at
  ``/home/user/project``: no other build's files, no runner code, no credentials;
- nothing of the runner is visible (``/proc`` shows the sandbox's own processes only);
- the network is a namespace of its own. ``pasta`` (Debian's ``passt``) gives it egress through
  the host's network stack with host loopback unmapped (``--no-map-gw``, ``-T none -U none``),
  and the routes inside send the private and link-local ranges (cluster services, the cloud
  metadata address, the gateway itself) into a blackhole; DNS goes through pasta's forwarder.
  Egress can be switched off (no route at all). The only way in is the sandbox's one preview
  port, which pasta forwards from the host's ``127.0.0.1`` to the namespace's loopback. A host
  with no route out (offline, or a network namespace with loopback only) has nothing for pasta
  to use: the sandbox then keeps a namespace with loopback only (no outbound network, said in a
  warning), and :mod:`cofounder_sandbox.relay` forwards the preview port instead. Either way the
  sandbox never shares the host's network namespace;
- killing pid 1 of the namespace makes the kernel kill every process in it, including ones that
  called ``setsid`` or ignore signals.

The development-only mode without bubblewrap (``unsafe-none``) gives none of this except the
project's path: each command gets a private mount namespace with the project at
``/home/user/project`` (``unshare``), and runs as the runner's user.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import structlog

from cofounder_sandbox import relay as _relay_module
from cofounder_sandbox import spawn
from cofounder_sandbox.base import PROJECT_DIR
from cofounder_sandbox.cgroups import SandboxCgroup

__all__ = [
    "BLACKHOLED",
    "DNS_FORWARD",
    "IsolationUnavailable",
    "Jail",
    "Limits",
    "Mode",
    "Proc",
    "find_tools",
    "route_commands",
]

Mode = Literal["namespaces", "unsafe-none"]
_T = TypeVar("_T")

#: The address the sandbox's resolver is pointed at; pasta forwards it to the host's resolver.
DNS_FORWARD: Final = "169.254.53.53"
#: Destinations a sandbox never reaches: private, shared, link-local (the cloud metadata address),
#: benchmarking and multicast ranges, where a cluster's services and the node live.
BLACKHOLED: Final = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
_INSTALL: Final = (
    "install them with: apt-get install bubblewrap passt util-linux iproute2 "
    "(or run bin/cofounder, which installs them where it can)"
)
_SYSTEM_DIRS: Final = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_START_TIMEOUT_S: Final = 10.0
_NS_GET_USERNS: Final = 0xB701  # linux/nsfs.h: _IO(0xb7, 0x1)
#: Who the preview relay runs as when the runner is root.
_NOBODY: Final = 65534
#: ``sh -c`` script of :meth:`Jail._wrapped`: its pid (kept by ``exec``) written to each file
#: named before ``--`` (the cgroup's ``cgroup.procs``), then the rest exec'd.
_ENTER_CGROUP: Final = (
    'while [ $# -gt 0 ] && [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; '
    'shift; exec "$@"'
)
#: What pasta says when the host has no interface with a default route (passt 2023).
_NO_INTERFACE: Final = ("No external routable interface", "External interface not usable")

_log = structlog.get_logger("cofounder.sandbox")


class IsolationUnavailable(RuntimeError):
    """The tools or kernel features the local sandbox's isolation needs are missing."""


class _NoRouteOut(IsolationUnavailable):
    """pasta found no host interface with a route out (it then has nothing to give)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of a sandbox. rlimits, the floor every host enforces: ``memory_bytes``
    bounds each process's address space, ``processes`` the sandbox uid's processes (each sandbox
    has a uid of its own when the runner is root), ``cpu_seconds`` each process's CPU time,
    ``file_bytes`` the size of any file written. Where the host lets the runner make cgroups
    (:mod:`cofounder_sandbox.cgroups`), ``total_memory_bytes`` and ``processes`` also bound all
    of the sandbox's processes together.
    """

    memory_bytes: int = 4 << 30
    total_memory_bytes: int = 8 << 30
    processes: int = 512
    cpu_seconds: int = 4 * 3600
    file_bytes: int = 2 << 30
    open_files: int = 4096
    #: The per-process address space of a browser command (the screenshot tool's Chromium).
    #: Chromium reserves address space it never touches (PartitionAlloc's pools, V8's sandbox
    #: cage): measured with Debian's chromium 156, it dies with a trap under 64 GiB and runs
    #: under 256 GiB. Its memory is still bounded by the sandbox's cgroup
    #: (``total_memory_bytes``) where the host allows one, and by the command's timeout.
    browser_memory_bytes: int = 1 << 40

    def for_browser(self) -> Limits:
        """These limits with the address space a browser needs (see ``browser_memory_bytes``)."""
        return replace(self, memory_bytes=max(self.memory_bytes, self.browser_memory_bytes))

    def apply(self, *, processes: bool = True) -> None:
        """Set them on the calling process (run in a child before ``exec``)."""
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_bytes, self.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))
        if processes:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.processes, self.processes))

    def prlimit_argv(self, prlimit: str, *, processes: bool = True) -> list[str]:
        """:meth:`apply` as a ``prlimit`` command line: it sets them on itself, then execs the
        command that follows its ``--`` (the start of bubblewrap, see :meth:`Jail._wrapped`)."""
        return [
            prlimit, "--core=0", f"--as={self.memory_bytes}", f"--cpu={self.cpu_seconds}",
            f"--fsize={self.file_bytes}", f"--nofile={self.open_files}",
            *([f"--nproc={self.processes}"] if processes else []),
            "--",
        ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Tools:
    bwrap: str
    pasta: str
    nsenter: str
    setpriv: str
    ip: str
    setsid: str
    prlimit: str


def find_tools() -> Tools:
    """The isolation tools on PATH; :class:`IsolationUnavailable` naming what is missing."""
    found = {
        name: shutil.which(name)
        for name in ("bwrap", "pasta", "nsenter", "setpriv", "ip", "setsid", "prlimit")
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise IsolationUnavailable(
            f"the local sandbox cannot isolate builds: {', '.join(missing)} not found; "
            f"{_INSTALL}. For development only, SANDBOX_ISOLATION=unsafe-none runs builds "
            "without isolation."
        )
    return Tools(**{k: v for k, v in found.items() if v is not None})


@dataclass(frozen=True, slots=True, order=True)
class Proc:
    """A process, told apart from a later one with the same pid by its start time."""

    pid: int
    started: int


def _started(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rpartition(")")[2].split()[19])


def _alive(proc: Proc) -> bool:
    """Running (a zombie has closed its files and sockets: it counts as gone)."""
    try:
        text = Path(f"/proc/{proc.pid}/stat").read_text()
    except OSError:
        return False
    fields = text.rpartition(")")[2].split()
    return fields[0] != "Z" and int(fields[19]) == proc.started


async def _gone(procs: list[Proc], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # Polling /proc: nothing signals the end of a process that is not our child.
    while any(_alive(p) for p in procs) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def _pasta_from(pidfile: Path) -> Proc | None:
    """The pasta a half-made start left running (its pid file written, its state not yet)."""
    try:
        pid = int(pidfile.read_text().strip())
        if b"pasta" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    except (OSError, ValueError):
        return None
    started = _started(pid)
    return Proc(pid, started) if started is not None else None


def _owner(ns_fd: int) -> int:
    """A descriptor of the user namespace that owns the namespace ``ns_fd`` (NS_GET_USERNS)."""
    return fcntl.ioctl(ns_fd, _NS_GET_USERNS)


def _pids() -> list[int]:
    with os.scandir("/proc") as entries:
        return [int(e.name) for e in entries if e.name.isdigit()]


def _child_of(parent: int) -> Proc | None:
    # The kernel's list of the parent's children (CONFIG_PROC_CHILDREN): one read, where a
    # scan of /proc reads every process's stat (with 100 sandboxes starting at once and
    # polling, that scan was a third of the runner's CPU: py-spy, issue #18).
    try:
        listed = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        listed = None
    if listed is not None:
        for pid in map(int, listed):
            started = _started(pid)
            if started is not None:
                return Proc(pid, started)
        return None
    for pid in _pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            return Proc(pid, int(fields[19]))
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ns(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def route_commands(routes: list[dict[str, Any]], *, egress: bool) -> list[str]:
    """The ``ip -batch`` commands that turn the routes pasta copied from the host (``ip -json
    route``) into the sandbox's: none left but, with ``egress``, a default route through the
    gateway, blackholes for :data:`BLACKHOLED`, the gateway and the host's own networks (its
    neighbours are no public egress, even outside the private ranges), and the DNS forward.

    ``ip -json`` writes a host route as a bare address: destinations are normalised, so one
    destination is one route (a second ``add`` of it would fail the whole batch, and with it
    every sandbox); the DNS route is a ``replace``, since it may be one of them.
    """
    gateway = next((r.get("gateway") for r in routes if r.get("dst") == "default"), None)
    device = next((r.get("dev") for r in routes if r.get("dst") == "default"), None)
    commands = [
        f"route del {r['dst']}" + (f" dev {r['dev']}" if r.get("dev") else "")
        for r in routes
        if r.get("dst")
    ]
    if egress and gateway and device:
        on_link = [r["dst"] for r in routes if r.get("dst", "default") != "default"]
        blackholed = dict.fromkeys(
            str(ipaddress.ip_network(d, strict=False)) for d in (*BLACKHOLED, gateway, *on_link)
        )
        commands += [
            f"route add default via {gateway} dev {device} onlink",
            *(f"route add blackhole {b}" for b in blackholed),
            f"route replace {DNS_FORWARD}/32 via {gateway} dev {device} onlink",
        ]
    return commands


@dataclass(slots=True)
class JailState:
    """What is kept in ``sandbox.json`` about the namespaces, so another runner can enter them."""

    init: Proc | None = None
    pidns: str | None = None
    pasta: Proc | None = None
    relay: Proc | None = None  # the preview port's relay, when there is no pasta (no route out)
    uid: int = 0
    gid: int = 0
    port: int = 0
    pgids: list[int] = field(default_factory=list)  # unsafe-none only: the commands' groups

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> JailState:
        def proc(value: object) -> Proc | None:
            return Proc(**value) if isinstance(value, dict) else None

        return cls(
            init=proc(data.get("init")),
            pidns=str(data["pidns"]) if data.get("pidns") else None,
            pasta=proc(data.get("pasta")),
            relay=proc(data.get("relay")),
            uid=int(str(data.get("uid", 0))),
            gid=int(str(data.get("gid", 0))),
            port=int(str(data.get("port", 0))),
            pgids=[int(g) for g in data.get("pgids", []) or []],  # type: ignore[attr-defined]
        )


@dataclass
class Jail:
    """One sandbox's namespaces (``mode="namespaces"``) or the unsafe stand-in.

    ``home`` is the sandbox's host folder: ``project/`` (the project), ``user/`` (its home),
    ``tmp/``, ``etc/`` (its resolver settings).
    """

    home: Path
    state: JailState
    mode: Mode = "namespaces"
    egress: bool = True
    limits: Limits = field(default_factory=Limits)
    tools: Tools | None = None
    on_change: Callable[[], None] | None = None  # persists ``state``

    @property
    def rootless(self) -> bool:
        return os.geteuid() != 0

    @functools.cached_property
    def cgroup(self) -> SandboxCgroup | None:
        """The sandbox's cgroup, where the host allows one (made on first use)."""
        if self.mode == "unsafe-none":
            return None
        return SandboxCgroup.make(
            f"cofounder-{self.home.name}",
            memory_bytes=self.limits.total_memory_bytes,
            processes=self.limits.processes,
        )

    # -- the namespaces -------------------------------------------------------------------------

    def running(self) -> bool:
        init = self.state.init
        return init is not None and _alive(init) and _ns(init.pid, "pid") == self.state.pidns

    async def start(self) -> None:
        """Make the namespaces (again, if a previous set died with the machine) and the network."""
        if self.mode == "unsafe-none" or self.running():
            return
        assert self.tools is not None
        await self.stop()
        for sub in ("user", "tmp", "etc"):
            (self.home / sub).mkdir(exist_ok=True)
        os.chmod(self.home / "tmp", 0o1777)  # noqa: S103 - the sandbox's /tmp, as any /tmp
        (self.home / "etc" / "resolv.conf").write_text(f"nameserver {DNS_FORWARD}\n")
        (self.home / "etc" / "hosts").write_text("127.0.0.1 localhost sandbox\n::1 localhost\n")
        if not self.rootless:
            for sub in ("user", "project"):
                _chown_tree(self.home / sub, self.state.uid, self.state.gid)
        try:
            init = await self._start_init()
            self.state.init = init
            self.state.pidns = _ns(init.pid, "pid")
            self._changed()
            offline = _no_route_out()
            if offline is None:
                try:
                    self.state.pasta = await self._start_network(init.pid)
                except _NoRouteOut as exc:
                    offline = str(exc)
            if offline is not None:
                self.state.relay = await self._start_relay(init)
                _log.warning(
                    "sandbox_without_network",
                    sandbox=self.home.name,
                    detail=f"{offline}: the sandbox runs with loopback only, no outbound "
                    f"network (installs from registries fail); its preview port is relayed "
                    f"from 127.0.0.1:{self.state.port}",
                )
            self._changed()
        except BaseException:
            await self.stop()  # nothing half-made is left running
            raise

    def _changed(self) -> None:
        if self.on_change is not None:
            with contextlib.suppress(FileNotFoundError):  # the sandbox's folder was removed
                self.on_change()

    def track(self, pgid: int) -> None:
        """unsafe-none: remember a command's process group (there is no namespace to look in)."""
        if self.mode == "unsafe-none":
            self.state.pgids = [g for g in self.state.pgids if _group_alive(g)] + [pgid]
            self._changed()

    async def _start_init(self) -> Proc:
        assert self.tools is not None
        read, write = os.pipe()
        argv = [
            self.tools.bwrap,
            # Unprivileged: its own user namespace, and none nested below it (kernel surface).
            *(["--unshare-user", "--disable-userns"] if self.rootless else []),
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try",
            *_system_mounts(),
            "--ro-bind", str(self.home / "etc" / "resolv.conf"), "/etc/resolv.conf",
            "--ro-bind", str(self.home / "etc" / "hosts"), "/etc/hosts",
            "--proc", "/proc", "--dev", "/dev",
            "--bind", str(self.home / "tmp"), "/tmp",  # noqa: S108 - the sandbox's own /tmp
            "--perms", "0755", "--dir", "/home",
            "--bind", str(self.home / "user"), "/home/user",
            "--bind", str(self.home / "project"), PROJECT_DIR,
            "--chdir", PROJECT_DIR,
            "--hostname", "sandbox",
            "--cap-drop", "ALL",
            "--new-session",
            "--info-fd", str(write),
            "--", "sleep", "infinity",
        ]  # fmt: skip
        # setsid --fork: bubblewrap is not the runner's child, so it outlives the runner (as an
        # E2B sandbox outlives its client) and no process object of ours waits for it. Its
        # cgroup and limits are set by a small wrapper that then execs it (not a preexec_fn:
        # that makes the runner fork itself, ~15 ms of its CPU per sandbox; see spawn.py).
        try:
            with open(self.home / "init.log", "ab") as log_file:  # noqa: ASYNC230 - local
                spawner = await spawn.run(
                    self._wrapped([self.tools.setsid, "--fork", *argv], processes=False),
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                    pass_fds=(write,),
                )
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        info = await self._reported(
            read,
            _read_info,
            log="init.log",
            failure="bubblewrap could not make the sandbox's namespaces",
            status=spawner.returncode,
        )
        # bubblewrap's pid 1 is not dumpable, so an unprivileged runner (and pasta, which drops
        # its capabilities) cannot open its namespaces; its child, ``sleep``, was started inside
        # them and can be entered. It stands for the sandbox: when it ends, pid 1 ends, and the
        # kernel ends everything else in the namespace.
        reaper = int(str(info["child-pid"]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        while (child := _child_of(reaper)) is None:
            if loop.time() > deadline or _started(reaper) is None:
                raise IsolationUnavailable("the sandbox's first process ended at once")
            await asyncio.sleep(0.005)
        return child

    async def _start_network(self, init: int) -> Proc:
        assert self.tools is not None
        pidfile = self.home / "pasta.pid"
        pidfile.unlink(missing_ok=True)
        # The namespaces are opened here and handed over as descriptors: pasta drops its
        # capabilities before it opens them, so as root it could not open them itself.
        fds = {"net": os.open(f"/proc/{init}/ns/net", os.O_RDONLY | os.O_CLOEXEC)}
        if self.rootless:
            fds["user"] = _owner(fds["net"])
        target = (
            ["--userns", f"/proc/self/fd/{fds['user']}", "--netns", f"/proc/self/fd/{fds['net']}"]
            if self.rootless
            else ["--runas", "0", "--netns", f"/proc/self/fd/{fds['net']}", "--netns-only"]
        )
        argv = [
            self.tools.pasta, "--config-net", "--ipv4-only", "--quiet",
            "--no-map-gw",            # the gateway is not the host's loopback
            "-T", "none", "-U", "none",  # nothing inside reaches the host's loopback ports
            "-u", "none",
            "-t", f"127.0.0.1/{self.state.port}",  # the one way in: the preview port
            "--dns-forward", DNS_FORWARD,
            "--pid", str(pidfile),
            *target,
        ]  # fmt: skip
        log = self.home / "pasta.log"
        try:
            # pasta forks into the background once the namespace's network is set up; its
            # first process exits then (a pipe here would stay open in the daemon: a file).
            # spawn.run: without forking the runner (see cofounder_sandbox.spawn).
            with open(log, "wb") as log_file:  # noqa: ASYNC230 - a local file
                done = await asyncio.wait_for(
                    spawn.run(
                        argv,
                        stdout=subprocess.DEVNULL,
                        stderr=log_file,
                        pass_fds=tuple(fds.values()),
                        start_new_session=True,
                    ),
                    _START_TIMEOUT_S,
                )
            code = done.returncode
        finally:
            for fd in fds.values():
                os.close(fd)
        if code != 0 or not pidfile.exists():
            text = "\n".join(line for line in log.read_text(errors="replace").splitlines()
                             if "syslog" not in line)  # fmt: skip
            if "tun" in text:
                text += " (pasta needs /dev/net/tun readable and writable by this user)"
            if any(said in text for said in _NO_INTERFACE):
                raise _NoRouteOut(f"pasta found no host interface with a route out ({text})")
            raise IsolationUnavailable(f"pasta could not give the sandbox a network: {text}")
        pid = int(pidfile.read_text().strip())
        started = _started(pid)
        if started is None:
            raise IsolationUnavailable("pasta ended right after it started")
        await self._route(init)
        return Proc(pid, started)

    async def _start_relay(self, init: Proc) -> Proc:
        """The preview port without pasta: a socket listening on the host's ``127.0.0.1:PORT``,
        handed to :mod:`cofounder_sandbox.relay` started in the sandbox's network namespace."""
        assert self.tools is not None
        listener = socket.socket()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.state.port))
            listener.listen(128)
        except OSError as exc:
            listener.close()
            raise IsolationUnavailable(
                f"the sandbox's preview port 127.0.0.1:{self.state.port}: {exc}"
            ) from None
        read, write = os.pipe()
        pidfd = -1
        with contextlib.suppress(OSError, AttributeError):  # before Linux 5.3: stop() ends it
            pidfd = os.pidfd_open(init.pid)
        handed = [listener.fileno(), write, *([pidfd] if pidfd >= 0 else [])]
        try:
            enter, fds = self._enter(init.pid, ("net",))
            handed += fds
            # A root runner's relay becomes nobody before it serves; an unprivileged runner's
            # is that user (the namespace's owner maps it to itself: no capability after exec).
            user = ("-1", "-1") if self.rootless else (str(_NOBODY), str(_NOBODY))
            argv = [
                self.tools.setsid, "--fork", *enter, "--",
                sys.executable or "python3", "-I", "-S", str(Path(_relay_module.__file__)),
                str(listener.fileno()), str(self.state.port), str(write), str(pidfd), *user,
            ]  # fmt: skip
            with open(self.home / "relay.log", "ab") as log_file:  # noqa: ASYNC230 - local
                # spawn.run: without forking the runner (see cofounder_sandbox.spawn).
                await spawn.run(
                    argv, stdout=subprocess.DEVNULL, stderr=log_file, pass_fds=tuple(handed)
                )
        finally:
            listener.close()
            for fd in handed[1:]:
                os.close(fd)
        pid = await self._reported(
            read, _read_line, log="relay.log", failure="the sandbox's preview relay did not start"
        )
        started = _started(pid)
        if started is None:
            raise IsolationUnavailable("the sandbox's preview relay ended right after it started")
        return Proc(pid, started)

    async def _reported(
        self,
        read: int,
        report: Callable[[int], Awaitable[_T]],
        *,
        log: str,
        failure: str,
        status: int = 0,
    ) -> _T:
        """``report(read)``: what a helper writes on the pipe ``read`` once it is ready (the pipe
        is closed after). :class:`IsolationUnavailable` with the end of the helper's log
        (``<home>/<log>``) when its start exited with a non-zero ``status``, or it exits before
        reporting, or it does not report within the start timeout."""
        try:
            if status != 0:
                raise ValueError(f"its start exited with status {status}")
            return await asyncio.wait_for(report(read), _START_TIMEOUT_S)
        except (TimeoutError, ValueError) as exc:
            said = (self.home / log).read_text(errors="replace")[-2000:].strip()
            raise IsolationUnavailable(f"{failure}: {said or str(exc) or 'no output'}") from None
        finally:
            os.close(read)

    async def _route(self, init: int) -> None:
        """Routes inside: egress to public addresses only, or none at all."""
        assert self.tools is not None

        async def ip(*args: str, commands: Sequence[str] = ()) -> str:
            assert self.tools is not None
            enter, fds = self._enter(init, ("net",))
            batch = "".join(f"{c}\n" for c in commands).encode() if commands else None
            try:
                # spawn.run: without forking the runner (see cofounder_sandbox.spawn).
                done = await spawn.run([*enter, self.tools.ip, *args], input=batch, pass_fds=fds)
            finally:
                for fd in fds:
                    os.close(fd)
            if done.returncode != 0:
                raise IsolationUnavailable(f"ip {' '.join(args)}: {done.stderr.decode().strip()}")
            return done.stdout.decode()

        routes = json.loads(await ip("-json", "-4", "route", "show", "table", "main"))
        commands = route_commands(routes, egress=self.egress)
        # One process for all of them (a sandbox start used to spawn ~20 nsenter + ip pairs:
        # half the runner's CPU at 100 concurrent builds); without -force, ip stops at the
        # first command that fails and exits non-zero, so a failure still refuses the sandbox.
        if commands:
            await ip("-4", "-batch", "-", commands=commands)

    # -- entering -------------------------------------------------------------------------------

    def _enter(self, target: int, kinds: Sequence[str]) -> tuple[list[str], tuple[int, ...]]:
        """``nsenter`` into ``kinds`` of ``target``'s namespaces, and the descriptors it needs.

        Unprivileged, bubblewrap puts its child in a nested user namespace that owns nothing;
        the runner joins the one that owns the namespaces (found with ``NS_GET_USERNS``).
        """
        assert self.tools is not None
        argv = [self.tools.nsenter, "--target", str(target),
                *(f"--{kind}" for kind in kinds)]  # fmt: skip
        if not self.rootless:
            return argv, ()
        with open(f"/proc/{target}/ns/net", "rb", buffering=0) as net:
            owner = _owner(net.fileno())
        return [*argv, f"--user=/proc/self/fd/{owner}", "--preserve-credentials"], (owner,)

    def command(
        self, argv: Sequence[str], env: Mapping[str, str]
    ) -> tuple[list[str], tuple[int, ...]]:
        """``argv`` run inside the sandbox as its user, with ``env`` as its whole environment;
        and the descriptors to hand to the process (the caller closes them once it started)."""
        clean = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
        if self.mode == "unsafe-none":
            return _unsafe_argv(self.home / "project", clean, rootless=self.rootless), ()
        assert self.tools is not None
        assert self.state.init is not None
        enter, fds = self._enter(self.state.init.pid, ("mount", "pid", "net", "ipc", "uts"))
        # Unprivileged, the runner's uid is root in the owning user namespace: step into the
        # nested one bubblewrap made for its child (pid 2 inside), where it is itself again.
        nested = ([self.tools.nsenter, "--user=/proc/2/ns/user", "--preserve-credentials", "--"]
                  if self.rootless else [])  # fmt: skip
        return [
            *enter, "--root", "--wd",  # pid 1's: the project
            "--", *nested, self.tools.setpriv,
            f"--reuid={self.state.uid}", f"--regid={self.state.gid}",
            # A user namespace made unprivileged forbids setgroups; its groups are unmapped.
            "--keep-groups" if self.rootless else "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
            "--", *clean,
        ], fds  # fmt: skip

    def preexec(self, *, browser: bool = False) -> Callable[[], None]:
        """What a command's process does before it runs: limits, and the cgroup. ``browser``:
        the limits with a browser's address space (:meth:`Limits.for_browser`)."""
        return self._preexec(
            processes=not self.rootless and self.mode == "namespaces", browser=browser
        )

    def wrap(self, argv: Sequence[str], *, browser: bool = False) -> list[str]:
        """A command's ``argv`` (:meth:`command`) that sets its own limits and cgroup, what
        :meth:`preexec` does, so that it needs no ``preexec_fn`` (see :meth:`_wrapped`)."""
        return self._wrapped(
            argv, processes=not self.rootless and self.mode == "namespaces", browser=browser
        )

    def _wrapped(self, argv: Sequence[str], *, processes: bool, browser: bool = False) -> list[str]:
        """``argv`` started by a small shell that enters the sandbox's cgroup, then by
        ``prlimit`` with the limits: what :meth:`_preexec` does, without a ``preexec_fn``, so
        that the caller can start it with ``Popen`` (``vfork``): under uvloop, a process with a
        ``preexec_fn`` is started by forking the whole runner (see ``spawn.py``)."""
        limits, cgroup = (self.limits.for_browser() if browser else self.limits), self.cgroup
        prlimit = self.tools.prlimit if self.tools else shutil.which("prlimit") or "prlimit"
        procs = [str(folder / "cgroup.procs") for folder in cgroup.folders] if cgroup else []
        return [
            "/bin/sh", "-c", _ENTER_CGROUP, "sandbox-start", *procs, "--",
            *limits.prlimit_argv(prlimit, processes=processes), *argv,
        ]  # fmt: skip

    def _preexec(self, *, processes: bool, browser: bool = False) -> Callable[[], None]:
        limits, cgroup = (self.limits.for_browser() if browser else self.limits), self.cgroup

        def prepare() -> None:
            # The cgroup first: once the address-space limit is set, this (large) process may
            # not allocate anything more before it execs.
            if cgroup is not None:
                cgroup.enter()
            limits.apply(processes=processes)

        return prepare

    # -- its processes --------------------------------------------------------------------------

    def members(self) -> set[Proc]:
        """Every process in the sandbox's pid namespace but its pid 1."""
        if self.mode == "unsafe-none" or self.state.pidns is None:
            return set()
        init = self.state.init.pid if self.state.init else -1
        out: set[Proc] = set()
        for pid in self._candidates():
            if pid != init and _ns(pid, "pid") == self.state.pidns:
                started = _started(pid)
                if started is not None:
                    out.add(Proc(pid, started))
        return out

    def _candidates(self) -> list[int]:
        """The pids that may be in the sandbox: its cgroup's, where it has one (every process
        of the sandbox is in it: bubblewrap and each command enter it before they run), else
        every process's. The scan read one ``/proc`` link per process on the host: with 100
        sandboxes it was most of a sandbox's stop, and it runs before every ``bash`` command
        too (py-spy, issue #18)."""
        cgroup = self.cgroup
        if cgroup is not None:
            try:
                text = (cgroup.folders[-1] / "cgroup.procs").read_text()
            except OSError:
                pass
            else:
                return [int(pid) for pid in text.split()]
        return _pids()

    def send(self, procs: set[Proc], sig: signal.Signals) -> None:
        for proc in sorted(procs):
            if _alive(proc):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, sig)

    def freeze(self, stop: bool) -> None:
        """SIGSTOP (or SIGCONT) every process, twice over to catch what forked meanwhile."""
        sig = signal.SIGSTOP if stop else signal.SIGCONT
        if self.mode == "unsafe-none":
            self._signal_groups(sig)
            return
        for _ in range(2):
            self.send(self.members(), sig)

    def _signal_groups(self, sig: signal.Signals) -> None:
        for pgid in self.state.pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

    async def stop(self) -> None:
        """End every process of the sandbox and its network helper."""
        if self.mode == "unsafe-none":
            self._signal_groups(signal.SIGCONT)
            self._signal_groups(signal.SIGKILL)
            self.state.pgids = []
            self._changed()
            return
        if self.state.init is not None and _alive(self.state.init):
            self.send(self.members(), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.state.init.pid, signal.SIGKILL)
        pasta = self.state.pasta or _pasta_from(self.home / "pasta.pid")
        for helper in (pasta, self.state.relay):
            if helper is not None and _alive(helper):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(helper.pid, signal.SIGKILL)
        # SIGKILL is delivered, not done: wait until they are gone, so that the preview port
        # refuses and the namespace is empty when this returns.
        await _gone([p for p in (self.state.init, pasta, self.state.relay) if p is not None])
        if self.cgroup is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            # Its last processes may still be being reaped: the group goes once they are.
            while not self.cgroup.remove() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            del self.cgroup  # made again (with its limits) if the sandbox starts again
        self.state.init = None
        self.state.pasta = None
        self.state.relay = None
        self.state.pidns = None
        self._changed()

    def listening(self, port: int) -> bool:
        """Whether something in the sandbox listens on TCP ``port`` (read from its netns)."""
        if self.mode == "unsafe-none" or self.state.init is None:
            return False
        try:
            table = Path(f"/proc/{self.state.init.pid}/net/tcp").read_text().splitlines()[1:]
        except OSError:
            return False
        for line in table:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                return True
        return False


async def _read_info(fd: int) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        chunk = await loop.run_in_executor(None, os.read, fd, 4096)
        if not chunk:
            raise ValueError("bubblewrap exited before reporting its namespaces")
        data += chunk
        with contextlib.suppress(ValueError):
            info = json.loads(data)
            if isinstance(info, dict) and "child-pid" in info:
                return info


async def _read_line(fd: int) -> int:
    """The number a helper writes on ``fd`` once it is ready (its pid)."""
    loop = asyncio.get_running_loop()
    data = b""
    while not data.endswith(b"\n"):
        chunk = await loop.run_in_executor(None, os.read, fd, 64)
        if not chunk:
            raise ValueError("the helper exited before it was ready")
        data += chunk
    return int(data)


def _no_route_out() -> str | None:
    """Why pasta would have nothing to give the sandbox (no IPv4 default route on this host,
    in this network namespace), or ``None``. Unreadable: ``None``, and pasta decides."""
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        cols = line.split()
        # Iface Destination Gateway Flags ... Mask: a default route is 0/0, and up (RTF_UP).
        if len(cols) >= 8 and cols[1] == cols[7] == "00000000" and int(cols[3], 16) & 1:
            return None
    return "this host has no IPv4 default route (no network, or loopback only)"


def _system_mounts() -> list[str]:
    out: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            out += ["--ro-bind", path, path]
    return out


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Hand ``root`` and all below it to ``uid``: with a stack of its own (``os.walk`` recurses on
    Python 3.11, and a tree the sandbox made thousands deep would raise RecursionError, so the
    sandbox could never start again); symlinks are changed, never followed."""
    os.chown(root, uid, gid, follow_symlinks=False)
    stack = [os.fsencode(root)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            with contextlib.suppress(OSError):
                os.chown(entry.path, uid, gid, follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)


def _unsafe_argv(project: Path, argv: list[str], *, rootless: bool) -> list[str]:
    """A private mount namespace with the project at its usual path; nothing else is isolated."""
    setup = (
        'mount -t tmpfs cofounder-home /home && mkdir -p "$2" && mount --bind "$1" "$2" '
        '&& cd "$2" && shift 2 && exec "$@"'
    )
    return [
        "unshare", "--mount", "--propagation", "private",
        *(["--user", "--map-root-user"] if rootless else []),
        "--", "/bin/sh", "-c", setup, "cofounder-sandbox", str(project), PROJECT_DIR, *argv,
    ]  # fmt: skip
