"""The local sandbox attacked from inside, the way a hostile command (or a prompt injected into an
idea brief) would: each test fails if the attack succeeds.

Runs as the user running the tests (root here: bubblewrap as root must still drop everything);
``test_rootless_runner_holds_too`` repeats the core attacks with the runner as an unprivileged
uid. The development switch (``unsafe-none``) is only checked for the project's path: it
isolates nothing, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog.testing

from cofounder_sandbox.base import PROJECT_DIR, PortNotForwarded, SandboxGone
from cofounder_sandbox.jail import IsolationUnavailable, Limits, find_tools
from cofounder_sandbox.local import LocalSandbox, LocalSandboxes

try:
    find_tools()
    _missing = ""
except IsolationUnavailable as exc:
    _missing = str(exc)

pytestmark = pytest.mark.skipif(
    bool(_missing) and os.environ.get("CI") != "true",
    reason=f"no isolation tools on this machine (CI installs them): {_missing}",
)

BUILD = "0195a0e2-aaaa-7000-8000-00000000abcd"


@pytest.fixture
async def sandboxes(tmp_path: Path) -> AsyncIterator[LocalSandboxes]:
    boxes = LocalSandboxes(
        tmp_path / "sandboxes",
        limits={"small": Limits(memory_bytes=256 << 20, processes=48)},
        preview_wait_s=0.5,
    )
    yield boxes
    await boxes.kill_all()


@pytest.fixture
async def box(sandboxes: LocalSandboxes) -> LocalSandbox:
    return await sandboxes.create(build_id=BUILD, metadata={})


async def sh(box: LocalSandbox, command: str, timeout: float = 20) -> str:
    result = await box.run(command, timeout=timeout)
    return result.output


@pytest.fixture
def listeners() -> Iterator[list[tuple[str, int]]]:
    """Servers on the host a sandbox must not reach: one on loopback (like Redis, PostgreSQL and
    the gateway here), one on every address (like a service bound to 0.0.0.0)."""
    socks = []
    for host in ("127.0.0.1", "0.0.0.0"):
        s = socket.socket()
        s.bind((host, 0))
        s.listen()
        socks.append(s)
    targets = [("127.0.0.1", socks[0].getsockname()[1]), ("127.0.0.1", socks[1].getsockname()[1])]
    for address in _host_addresses():
        targets.append((address, socks[1].getsockname()[1]))
    for port in (6379, 5432, 8000):  # the usual control-plane ports, where something listens
        if _reachable("127.0.0.1", port):
            targets.append(("127.0.0.1", port))
    for host, port in targets:  # each is reachable from the host: the test is not vacuous
        assert _reachable(host, port), (host, port)
    yield targets
    for s in socks:
        s.close()


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def _host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=False)
    try:
        links = json.loads(out.stdout or "[]")
    except ValueError:
        return []
    return [a["local"] for link in links for a in link.get("addr_info", [])
            if a.get("scope") == "global"]  # fmt: skip


_PROBE = """python3 - <<'EOF'
import socket, sys
for target in sys.argv[1:] or {targets!r}:
    host, port = target.rsplit(":", 1)
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, int(port))); print("REACHED", target)
    except OSError as exc:
        print("refused", target, exc.__class__.__name__)
EOF"""


async def test_no_tcp_connection_reaches_the_host_or_private_networks(
    box: LocalSandbox, listeners: list[tuple[str, int]]
) -> None:
    targets = [f"{h}:{p}" for h, p in listeners] + ["169.254.169.254:80", "10.0.0.1:6379"]
    out = await sh(box, _PROBE.format(targets=targets))
    assert "REACHED" not in out, out
    assert out.count("refused") == len(targets), out


def _neighbours() -> list[str]:
    """An address on each network the host is directly on, neither its own nor a gateway's."""
    out = subprocess.run(["ip", "-j", "-4", "route"], capture_output=True, text=True, check=False)
    routes = json.loads(out.stdout or "[]")
    taken = {*_host_addresses(), *(r.get("gateway") for r in routes)}
    found = []
    for route in routes:
        if route.get("scope") != "link" or "/" not in route.get("dst", ""):
            continue
        network = ipaddress.ip_network(route["dst"], strict=False)
        found += [str(a) for a in itertools.islice(network.hosts(), 8) if str(a) not in taken][:1]
    return found


async def test_no_tcp_connection_reaches_the_host_s_own_network(box: LocalSandbox) -> None:
    """Another machine on the host's own network (a node, a cluster's service) is no public
    egress, even where that network is not a private range (here 192.0.2.0/24): it is refused
    at once by a route, not tried and left to time out."""
    neighbours = _neighbours()
    if not neighbours:
        pytest.skip("the host is directly on no network but its own address")
    out = await sh(box, _PROBE.format(targets=[f"{a}:80" for a in neighbours]))
    assert "REACHED" not in out, out
    assert out.count("refused") == len(neighbours), out
    assert "TimeoutError" not in out, out


async def test_a_registry_is_reachable_where_egress_is_allowed(
    box: LocalSandbox, listeners: list[tuple[str, int]]
) -> None:
    if not shutil.which("npm"):
        pytest.skip("no npm on this host")
    if box.jail.state.relay is not None:
        pytest.skip("this host has no route out: its sandboxes have loopback only")
    host = await asyncio.create_subprocess_exec(
        "npm", "view", "is-number", "version",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        failed = await asyncio.wait_for(host.wait(), 60)
    except TimeoutError:
        host.kill()
        await host.wait()
        failed = 1
    if failed:
        pytest.skip("the npm registry is not reachable from this host either")
    out = await sh(box, "npm view is-number version 2>&1 | tail -1", timeout=90)
    assert out.strip()[:1].isdigit(), out
    # ... and in the same sandbox, still nothing of the host.
    out = await sh(box, _PROBE.format(targets=[f"{h}:{p}" for h, p in listeners]))
    assert "REACHED" not in out, out


async def test_no_egress_means_no_route_at_all(tmp_path: Path) -> None:
    boxes = LocalSandboxes(tmp_path / "offline", egress=False)
    box = await boxes.create(build_id=BUILD, metadata={})
    try:
        out = await sh(box, "ip -4 route; " + _PROBE.format(targets=["203.0.113.80:443"]))
        assert "default" not in out
        assert "REACHED" not in out
    finally:
        await box.kill()


async def test_no_other_process_and_no_secret_is_visible(
    box: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", "the-runners-secret-0123456789abcdef")
    out = await sh(box, "ls /proc | grep -E '^[0-9]+$' | wc -l; cat /proc/*/cmdline | tr '\\0' ' '")
    count, cmdlines = out.split("\n", 1)
    assert int(count) < 10, out  # pid 1, sleep, this command's shell and tools
    assert "_pytest" not in cmdlines  # the runner is not there
    assert "pytest -" not in cmdlines
    out = await sh(box, "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; env")
    assert "the-runners-secret" not in out
    out = await sh(box, f"cat /proc/{os.getpid()}/environ 2>&1; kill -0 {os.getpid()} 2>&1")
    assert "the-runners-secret" not in out


async def test_no_capability_no_privilege_no_writes_outside(box: LocalSandbox) -> None:
    out = await sh(box, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; id -u")
    fields = dict(line.split(":\t") for line in out.strip().splitlines()[:-1])
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, out
    assert fields["NoNewPrivs"].strip() == "1"
    assert out.strip().splitlines()[-1] != "0"

    marker = f"cofounder-escape-{os.getpid()}"
    out = await sh(
        box,
        "mount -o remount,rw / 2>&1; umount /tmp 2>&1; "
        f"for d in / /usr /etc /root /var /home; do echo x > $d/{marker} 2>&1; done; "
        "ls / ; ls /home",
    )
    assert "must be superuser" in out or "Operation not permitted" in out
    for folder in ("/", "/usr", "/etc", "/root", "/var", "/home", "/tmp"):
        assert not Path(folder, marker).exists()  # noqa: ASYNC240 - a stat, in a test
    assert "work" not in out.split()  # the host's folders are not mounted
    # The project, its home and its /tmp are the only writable places, and they are its own.
    out = await sh(box, f"echo hi > {PROJECT_DIR}/mine.txt && echo ok")
    assert out.strip() == "ok"
    assert await box.read_file(f"{PROJECT_DIR}/mine.txt") == b"hi\n"


@pytest.mark.parametrize(
    "plant",
    [
        "ln -s / root",
        "ln -s /etc/passwd p",
        "ln -s ../.. up",
        "ln -s /proc/self/root pr",
        "ln -s {other} other",
    ],
)
async def test_file_tools_do_not_follow_symlinks_out_of_the_project(
    sandboxes: LocalSandboxes, box: LocalSandbox, plant: str
) -> None:
    other = await sandboxes.create(build_id=BUILD, metadata={})
    (other.workspace / "secret.txt").write_text("other build's secret\n")
    link = plant.format(other=other.workspace)
    await sh(box, link)
    name = link.split()[-1]
    attempts = [
        box.read_file(f"{PROJECT_DIR}/{name}"),
        box.read_file(f"{PROJECT_DIR}/{name}/etc/passwd"),
        box.read_file(f"{PROJECT_DIR}/{name}/secret.txt"),
        box.write_file(f"{PROJECT_DIR}/{name}/planted.txt", b"x"),
        box.write_file(f"{PROJECT_DIR}/{name}/tmp/planted.txt", b"x"),
        box.list_dir(f"{PROJECT_DIR}/{name}", depth=2),
    ]
    for attempt in attempts:
        try:
            found = await attempt
        except OSError:
            continue
        raise AssertionError(f"{link}: {found!r}")
    for folder in ("/", "/tmp", str(other.workspace), str(box.workspace.parent.parent)):
        assert not Path(folder, "planted.txt").exists()  # noqa: ASYNC240 - a stat, in a test
    grep = await box.grep("root:|secret", PROJECT_DIR, None)
    assert grep == [], grep
    found = await box.glob("**/*", PROJECT_DIR)
    assert all(p.rstrip("/").endswith(name) for p in found), found
    with contextlib.suppress(OSError):  # refused is as good as absent
        assert not await box.is_dir(f"{PROJECT_DIR}/{name}/etc")


async def test_symlinks_inside_the_project_keep_working(box: LocalSandbox) -> None:
    await sh(box, "mkdir -p src && echo 'x = 1' > src/a.py && ln -s src lib && ln -s a.py src/b")
    assert await box.read_file(f"{PROJECT_DIR}/lib/a.py") == b"x = 1\n"
    assert await box.read_file(f"{PROJECT_DIR}/src/b") == b"x = 1\n"
    await box.write_file(f"{PROJECT_DIR}/lib/c.py", b"y = 2\n")
    assert await box.read_file(f"{PROJECT_DIR}/src/c.py") == b"y = 2\n"
    assert "uid" not in await sh(box, "echo more >> src/c.py && cat src/c.py")


_SWAP = textwrap.dedent(
    """\
    mkdir -p real && ln -sfn {target} link && python3 - <<'EOF' > /dev/null 2>&1 &
    import ctypes, os, time
    libc = ctypes.CDLL(None, use_errno=True)
    open("swapping", "w").close()
    end = time.time() + 60
    while not os.path.exists("stop") and time.time() < end:
        libc.renameat2(-100, b"real", -100, b"link", 2)  # RENAME_EXCHANGE, over and over
    EOF
    echo started"""
)


async def test_a_racing_symlink_swap_never_lets_a_tool_out(
    box: LocalSandbox, tmp_path: Path
) -> None:
    target = tmp_path / "host"
    target.mkdir()
    (target / "secret.txt").write_text("host secret")
    assert "started" in await sh(box, _SWAP.format(target=target))
    await _until((box.workspace / "swapping").exists)
    wrote = refused = 0
    try:
        for n in range(400):
            try:
                await box.write_file(f"{PROJECT_DIR}/real/f{n}.txt", b"x")
                wrote += 1
            except OSError:
                refused += 1
            with contextlib.suppress(OSError):
                data = await box.read_file(f"{PROJECT_DIR}/real/secret.txt")
                assert data != b"host secret"
    finally:
        await box.write_file(f"{PROJECT_DIR}/stop", b"")
    landed = await asyncio.to_thread(lambda: sorted(p.name for p in target.iterdir()))
    assert landed == ["secret.txt"], "a write landed on the host"
    assert refused > 0, "the swap never raced a write"  # the race was really run


async def test_memory_and_process_limits(sandboxes: LocalSandboxes) -> None:
    box = await sandboxes.create(build_id=BUILD, metadata={"tier": "small"})
    out = await sh(box, "python3 -c 'b = bytearray(512 << 20); print(\"ALLOCATED\")' 2>&1")
    assert "ALLOCATED" not in out
    assert "MemoryError" in out
    fork = (
        "python3 -c '\nimport os, time\nn = 0\ntry:\n    for _ in range(100):\n"
        "        if os.fork() == 0:\n            time.sleep(5); os._exit(0)\n        n += 1\n"
        'except OSError as exc:\n    print("refused", exc)\nprint("forked", n)\n\''
    )
    out = await sh(box, fork)
    assert "refused" in out, out
    assert int(out.split("forked")[1].split()[0]) < 48


def _sandbox_processes(uid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


_ESCAPES = (
    "setsid sleep 1001 >/dev/null 2>&1 < /dev/null & "
    "setsid -f bash -c 'trap \"\" INT TERM HUP; sleep 1002' >/dev/null 2>&1; "
    "nohup bash -c 'trap \"\" INT; sleep 1003' >/dev/null 2>&1 & "
    "(bash -c 'sleep 1004' &) ; "
)


async def test_kill_ends_every_process_even_detached_ones(box: LocalSandbox) -> None:
    if os.geteuid() != 0:
        pytest.skip("processes are told apart by the sandbox's own uid when the runner is root")
    uid = box.jail.state.uid
    await sh(box, _ESCAPES + "echo started")
    assert len(_sandbox_processes(uid)) >= 4
    await box.kill()
    await _until(lambda: not _sandbox_processes(uid))
    assert box.jail.state.pasta is None


async def test_a_timeout_ends_what_the_command_started_but_not_earlier_servers(
    box: LocalSandbox,
) -> None:
    await sh(box, "nohup python3 -m http.server $PORT --bind 127.0.0.1 >/dev/null 2>&1 & echo ok")
    url = await box.preview_url(3000)
    result = await box.run(_ESCAPES + "sleep 60", timeout=1)
    assert result.timed_out
    out = await sh(box, "ps -eo args")
    for n in (1001, 1002, 1003, 1004):
        assert f"sleep {n}" not in out, out
    assert "http.server" in out
    assert url == await box.preview_url(3000)


async def test_a_killed_sandbox_is_not_brought_back_by_a_runner_that_still_holds_it(
    sandboxes: LocalSandboxes, box: LocalSandbox
) -> None:
    shell = await box.open_shell()
    assert (await shell.run("echo alive", timeout=10)).output == "alive\n"
    other_runner = await sandboxes.connect(box.id)
    await other_runner.kill()
    with pytest.raises(SandboxGone):
        await shell.run("echo back", timeout=10)
    assert not box.jail.running()
    with pytest.raises(SandboxGone):
        await sandboxes.connect(box.id)


async def test_a_forged_end_marker_does_not_end_a_command(box: LocalSandbox) -> None:
    shell = await box.open_shell()
    forged = (
        "declare -f; echo '__COFOUNDER_DONE_0000000000000000__:0'; "
        "printf '\\n__COFOUNDER_DONE_%s__:0\\n' x; sleep 1; echo AFTER; exit 7"
    )
    result = await shell.run(forged, timeout=10)
    assert result.exit_code == 7
    assert result.output.rstrip().endswith("AFTER")
    # A background job that keeps printing never writes into a later command's result.
    await shell.run("(for i in $(seq 50); do echo LEAK; sleep 0.05; done) & echo bg", timeout=10)
    later = await shell.run("sleep 0.5; echo clean", timeout=10)
    assert later.output == "clean\n"
    await shell.close()


async def test_only_the_sandbox_preview_port_is_offered(box: LocalSandbox) -> None:
    for port in (6379, 5432, 8000, 22, box.port + 1):
        with pytest.raises(PortNotForwarded):
            await box.preview_url(port)
        with pytest.raises(PortNotForwarded):
            box.internal_url(port)
    # The one forwarded port is reachable from the host once something listens inside.
    await sh(box, "nohup python3 -m http.server $PORT --bind 0.0.0.0 >/dev/null 2>&1 & echo ok")
    url = await box.preview_url(3000)
    reader, writer = await asyncio.open_connection("127.0.0.1", box.port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert (await reader.read(12)).startswith(b"HTTP/1.0 200")
    writer.close()
    assert url.endswith(str(box.port))


@pytest.mark.parametrize("isolation", ["namespaces", "unsafe-none"])
async def test_the_project_path_works_in_bash_in_every_mode(tmp_path: Path, isolation: str) -> None:
    boxes = LocalSandboxes(tmp_path / isolation, isolation=isolation)
    box = await boxes.create(build_id=BUILD, metadata={})
    try:
        await box.write_file(f"{PROJECT_DIR}/hello.txt", b"hi\n")
        out = await sh(box, "cd /home/user/project && ls && pwd && echo made > made.txt")
        assert out.split() == ["hello.txt", PROJECT_DIR]
        assert await box.read_file(f"{PROJECT_DIR}/made.txt") == b"made\n"
    finally:
        await box.kill()


async def test_the_development_switch_says_it_isolates_nothing(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        boxes = LocalSandboxes(tmp_path / "unsafe", isolation="unsafe-none")
        box = await boxes.create(build_id=BUILD, metadata={})
        await box.kill()
    assert [e["event"] for e in logs] == ["sandbox_isolation_off"]
    assert logs[0]["log_level"] == "warning"


async def test_without_the_tools_the_sandbox_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    boxes = LocalSandboxes(tmp_path / "none")
    with pytest.raises(IsolationUnavailable, match="apt-get install bubblewrap passt"):
        boxes.check()
    with pytest.raises(IsolationUnavailable, match="unsafe-none"):
        await boxes.create(build_id=BUILD, metadata={})


_ROOTLESS = textwrap.dedent(
    """\
    import asyncio, json, os, sys
    from cofounder_sandbox.local import LocalSandboxes
    async def main():
        boxes = LocalSandboxes(sys.argv[1])
        box = await boxes.create(build_id="0195a0e2-aaaa-7000-8000-00000000abcd", metadata={})
        out = {}
        for name, cmd in json.loads(sys.argv[2]).items():
            out[name] = (await box.run(cmd, timeout=20)).output
        try:
            await box.read_file("/home/user/project/p")
            out["symlink"] = "READ"
        except OSError as exc:
            out["symlink"] = str(exc)
        timed_out = await box.run(sys.argv[3] + "sleep 60", timeout=1)
        out["timeout"] = str(timed_out.timed_out) + (await box.run("ps -eo args", timeout=9)).output
        await box.run(sys.argv[3] + "echo again", timeout=9)
        await box.kill()
        await asyncio.sleep(0.5)
        # This run's sleeps only (another test run on the machine may have its own).
        mark = sys.argv[4].encode()
        out["after_kill"] = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
                             and mark in open(f"/proc/{p}/cmdline", "rb").read()]
        print(json.dumps(out))
    asyncio.run(main())
    """
)


def test_rootless_runner_holds_too(listeners: list[tuple[str, int]]) -> None:
    if os.geteuid() != 0:
        pytest.skip("the suite itself runs rootless: every other test here is the rootless run")
    python = shutil.which("python3", path="/usr/bin:/bin")
    # The project's code and its dependencies, not this interpreter's standard library.
    paths = [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(sys.base_prefix)]
    nobody = 65534
    if not python or not paths:
        pytest.skip("no system Python to run a rootless runner with")
    work = Path(tempfile.mkdtemp(prefix="cofounder-rootless-"))
    try:
        os.chown(work, nobody, nobody)
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(paths), "HOME": str(work)}
        # A secret in the runner's environment (its model key, DATABASE_URL...). A rootless
        # runner's sandbox runs as the runner's own uid, so every process the runner starts
        # around it (bubblewrap, the sandbox's init, the preview relay) must start without it.
        secret = f"the-runners-secret-{secrets.token_hex(8)}"
        runner_env = {**env, "ANTHROPIC_API_KEY": secret}
        check = subprocess.run(
            ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", python, "-c",
             "import cofounder_sandbox.local"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if check.returncode:
            pytest.skip(f"this checkout is not readable by an unprivileged uid: {check.stderr}")
        commands = {
            "net": _PROBE.format(targets=[f"{h}:{p}" for h, p in listeners]),
            "caps": "grep -E '^(CapPrm|CapEff|CapAmb|NoNewPrivs)' /proc/self/status; "
            "unshare -U true 2>&1 | tail -1",
            "pids": "ls /proc | grep -cE '^[0-9]+$'",
            "mount": "mount -o remount,rw / 2>&1; echo x > /usr/x 2>&1; echo done",
            "path": "cd /home/user/project && ln -s /etc/passwd p && pwd",
            "environ": "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; env",
        }
        # The escapes' sleeps carry a mark of this test's own (`sleep 1001.<mark>`).
        mark = f".{secrets.randbelow(10**6):06d}"
        escapes = re.sub(r"sleep (100\d)", rf"sleep \g<1>{mark}", _ESCAPES)
        done = subprocess.run(
            ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", python, "-c",
             _ROOTLESS, str(work / "sandboxes"), json.dumps(commands), escapes, mark],
            env=runner_env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if "bubblewrap could not make" in done.stderr:
            pytest.skip(f"unprivileged user namespaces are off here: {done.stderr[-300:]}")
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert "REACHED" not in out["net"], out["net"]
        assert "refused" in out["net"], out["net"]
        *lines, nested = out["caps"].strip().splitlines()
        caps = dict(line.split(":\t") for line in lines)
        # The bounding set stays full here: joining a user namespace resets it, and the exec
        # that follows takes the capabilities needed to drop it. With no_new_privs and a
        # non-root uid nothing can be gained from it, and no nested user namespace is allowed.
        for cap in ("CapPrm", "CapEff", "CapAmb"):
            assert int(caps[cap], 16) == 0, out["caps"]
        assert caps["NoNewPrivs"].strip() == "1"
        assert "unshare failed" in nested or "Operation not permitted" in nested, nested
        assert int(out["pids"]) < 10
        assert "Read-only file system" in out["mount"]
        assert out["path"].strip() == PROJECT_DIR
        assert "PATH=" in out["environ"]  # environments were read...
        assert secret not in out["environ"]  # ...and none holds the runner's secret
        assert "outside the project" in out["symlink"]
        assert out["timeout"].startswith("True")
        for n in (1001, 1002, 1003, 1004):
            assert f"sleep {n}" not in out["timeout"], out["timeout"]
        assert out["after_kill"] == []
    finally:
        shutil.rmtree(work, ignore_errors=True)


_OFFLINE = textwrap.dedent(
    """\
    import asyncio, json, socket, sys, urllib.request
    import structlog.testing
    from cofounder_sandbox.local import LocalSandboxes
    async def main():
        control = socket.socket()  # the control plane's stand-in: Redis, PostgreSQL, the gateway
        control.bind(("127.0.0.1", 0))
        control.listen()
        target = "127.0.0.1:%d" % control.getsockname()[1]
        socket.create_connection(("127.0.0.1", control.getsockname()[1]), 2).close()
        with structlog.testing.capture_logs() as logs:
            boxes = LocalSandboxes(sys.argv[1], preview_wait_s=5)
            box = await boxes.create(build_id="0195a0e2-aaaa-7000-8000-00000000abcd", metadata={})
        out = {"logs": [(e["event"], e["log_level"], e.get("detail", "")) for e in logs]}
        probe = sys.argv[2].replace("TARGETS", json.dumps([target, "203.0.113.80:443"]))
        out["inside"] = (await box.run("ip -o link; ip -4 route; " + probe, timeout=20)).output
        await box.run("nohup python3 -m http.server $PORT --bind 127.0.0.1 >/dev/null 2>&1 &",
                      timeout=10)
        url = await box.preview_url(3000)
        out["url"] = (url, box.port)
        reply = await asyncio.to_thread(urllib.request.urlopen, url, timeout=10)
        out["preview"] = reply.status
        await box.kill()
        try:
            socket.create_connection(("127.0.0.1", box.port), 2).close()
            out["after_kill"] = "open"
        except ConnectionRefusedError:
            out["after_kill"] = "refused"
        print(json.dumps(out))
    asyncio.run(main())
    """
)


@pytest.mark.parametrize("runner", ["root", "rootless"])
def test_a_host_with_loopback_only_still_gets_sandboxes_and_previews(runner: str) -> None:
    """Offline (a network namespace with loopback only, no default route), pasta has no host
    interface to use: the sandbox keeps a namespace with loopback only, says so, and its preview
    is relayed to the host's 127.0.0.1:PORT; it still reaches nothing of the host."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("making a loopback-only network namespace for the runner needs root")
    python = sys.executable
    paths = [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(sys.base_prefix)]
    work = Path(tempfile.mkdtemp(prefix="cofounder-offline-"))
    try:
        drop: list[str] = []
        if runner == "rootless":
            python = shutil.which("python3", path="/usr/bin:/bin") or ""
            if not python or not paths:
                pytest.skip("no system Python to run a rootless runner with")
            os.chown(work, 65534, 65534)
            drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(paths), "HOME": str(work)}
        probe = _PROBE.replace("{targets!r}", "TARGETS")
        done = subprocess.run(
            ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "offline",
             *drop, python, "-c", _OFFLINE, str(work / "sandboxes"), probe],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if runner == "rootless" and "bubblewrap could not make" in done.stderr:
            pytest.skip(f"unprivileged user namespaces are off here: {done.stderr[-300:]}")
        if runner == "rootless" and "ModuleNotFoundError" in done.stderr:
            pytest.skip(f"this checkout is not readable by an unprivileged uid: {done.stderr}")
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        # Said once, as a warning, with why.
        [(event, level, detail)] = out["logs"]
        assert (event, level) == ("sandbox_without_network", "warning")
        assert "no IPv4 default route" in detail
        assert "no outbound network" in detail
        # Loopback only: no interface but lo, no route; the host's loopback port is not reached.
        links = re.findall(r"^\d+: (\S+?)[:@]", out["inside"], re.M)
        assert links == ["lo"], out["inside"]
        assert not re.search(r"^default ", out["inside"], re.M), out["inside"]
        assert "REACHED" not in out["inside"], out["inside"]
        assert out["inside"].count("refused") == 2, out["inside"]
        # The preview keeps its shape and answers from the host; the kill closes it.
        url, port = out["url"]
        assert url == f"http://127.0.0.1:{port}"
        assert out["preview"] == 200
        assert out["after_kill"] == "refused"
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _until(check: object, timeout: float = 10) -> None:
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_the_sandbox_s_processes_share_one_memory_limit(tmp_path: Path) -> None:
    boxes = LocalSandboxes(
        tmp_path / "cgroup", limits={"default": Limits(total_memory_bytes=256 << 20)}
    )
    box = await boxes.create(build_id=BUILD, metadata={})
    group = box.jail.cgroup
    try:
        if group is None:
            pytest.skip("this host lets the runner make no cgroup: the rlimits are the floor")
        hold = 'python3 -c \'import time; b = b"x" * (150 << 20); time.sleep(2); print("held")\''
        out = await sh(box, f"for i in 1 2 3; do {hold} & done; wait; echo done", timeout=60)
        # Each process is well under its own limit (4 GiB); together they do not fit.
        assert out.splitlines().count("held") < 3, out
        assert "Killed" in out  # by the kernel's OOM killer, inside the sandbox's group
        assert "done" in out
    finally:
        await box.kill()
    assert not any(folder.exists() for folder in group.folders)  # removed with the sandbox


async def test_background_output_costs_the_runner_little_and_pins_few_descriptors(
    box: LocalSandbox,
) -> None:
    """``yes &`` left writing into its command's pipe was read as fast as it wrote: half a core
    of the runner's, for as long as it lived. And each command that leaves a job holding its
    pipe kept one of the runner's descriptors open: twenty such commands, twenty descriptors."""
    shell = await box.open_shell()
    try:
        done = await shell.run("yes &", timeout=10)
        assert done.exit_code == 0
        before = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(2)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert cpu < 0.4, f"the runner spent {cpu:.2f} s of CPU in 2 s on a background job"
        descriptors = len(os.listdir("/proc/self/fd"))
        for n in range(20):
            await shell.run(f"sleep 60{n:02d} &", timeout=10)  # each holds its pipe
        assert len(os.listdir("/proc/self/fd")) - descriptors <= 16
    finally:
        await shell.close()
