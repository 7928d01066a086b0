"""The E2B stand-in through the unmodified SDK and ``E2BSandboxes``: the contract it implements
pinned to the installed ``e2b`` release, and what the adapter needs of envd (streaming, exit
codes, timeouts, binary files, listing, the snapshot's tar read, previews, kill, pause)."""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import e2b
import httpx
import pytest
from e2b.envd.filesystem import filesystem_connect, filesystem_pb
from e2b.envd.process import process_connect, process_pb
from protobuf import Message

from cofounder_e2b_standin import RunningStandin, preview_request, serve
from cofounder_sandbox.base import PROJECT_DIR, SandboxGone
from cofounder_sandbox.e2b import E2BSandbox, E2BSandboxes
from cofounder_snapshots.collect import collect_sandbox

#: The envd contract the stand-in implements, as e2b 2.63 ships it: each message's fields and
#: each service's RPC paths. A new release that changes them fails here, saying what moved.
PINNED_SDK = "2.63.0"
PINNED_MESSAGES = {
    "process.ProcessConfig": ("cmd", "args", "envs", "cwd"),
    "process.StartRequest": ("process", "pty", "tag", "stdin"),
    "process.StartResponse": ("event",),
    "process.ProcessEvent": ("event",),
    "process.ProcessEvent.StartEvent": ("pid",),
    "process.ProcessEvent.DataEvent": ("output",),
    "process.ProcessEvent.EndEvent": ("exit_code", "exited", "status", "error"),
    "process.ProcessEvent.KeepAlive": (),
    "process.ListResponse": ("processes",),
    "process.ProcessInfo": ("config", "pid", "tag"),
    "process.SendSignalRequest": ("process", "signal"),
    "process.ProcessSelector": ("selector",),
    "filesystem.StatRequest": ("path",),
    "filesystem.StatResponse": ("entry",),
    "filesystem.ListDirRequest": ("path", "depth"),
    "filesystem.ListDirResponse": ("entries",),
    "filesystem.MakeDirRequest": ("path",),
    "filesystem.RemoveRequest": ("path",),
    "filesystem.MoveRequest": ("source", "destination"),
    "filesystem.EntryInfo": (
        "name", "type", "path", "size", "mode", "permissions", "owner", "group",
        "modified_time", "symlink_target", "metadata", "is_symlink",
    ),
}  # fmt: skip
PINNED_PATHS = {
    "/process.Process/List", "/process.Process/Connect", "/process.Process/Start",
    "/process.Process/Update", "/process.Process/StreamInput", "/process.Process/SendInput",
    "/process.Process/SendSignal", "/process.Process/CloseStdin",
    "/filesystem.Filesystem/Stat", "/filesystem.Filesystem/MakeDir",
    "/filesystem.Filesystem/Move", "/filesystem.Filesystem/ListDir",
    "/filesystem.Filesystem/Remove", "/filesystem.Filesystem/WatchDir",
    "/filesystem.Filesystem/CreateWatcher", "/filesystem.Filesystem/GetWatcherEvents",
    "/filesystem.Filesystem/RemoveWatcher",
}  # fmt: skip


def _messages(module: Any, prefix: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}

    def visit(cls: type, name: str) -> None:
        out[name] = tuple(getattr(cls, "__slots__", ()))
        for attr, inner in vars(cls).items():
            if inspect.isclass(inner) and issubclass(inner, Message):
                visit(inner, f"{name}.{attr}")

    for attr, cls in vars(module).items():
        if inspect.isclass(cls) and issubclass(cls, Message) and cls.__module__ == module.__name__:
            visit(cls, f"{prefix}.{attr}")
    return out


def _paths(application: type) -> set[str]:
    source = inspect.getsource(application)
    return {line.split('"')[1] for line in source.splitlines() if '": Endpoint.' in line}


def test_the_sdk_still_speaks_the_envd_contract_the_standin_implements() -> None:
    shipped = {
        **_messages(process_pb, "process"),
        **_messages(filesystem_pb, "filesystem"),
    }
    changed = {
        name: (fields, shipped.get(name))
        for name, fields in PINNED_MESSAGES.items()
        if shipped.get(name) != fields
    }
    assert not changed, (
        f"e2b {e2b.__version__ if hasattr(e2b, '__version__') else '?'} changed envd messages the "
        f"E2B stand-in implements (pinned from {PINNED_SDK}); update cofounder_e2b_standin.envd "
        f"and this pin. name: (pinned, now): {changed}"
    )
    paths = _paths(process_connect.ProcessASGIApplication) | _paths(
        filesystem_connect.FilesystemASGIApplication
    )
    assert paths == PINNED_PATHS, (
        f"the envd RPC paths changed since e2b {PINNED_SDK}: added {paths - PINNED_PATHS}, "
        f"removed {PINNED_PATHS - paths}; update cofounder_e2b_standin.envd and this pin"
    )


@pytest.fixture
async def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningStandin]:
    async with serve(tmp_path / "e2b") as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture
async def sandboxes(standin: RunningStandin) -> E2BSandboxes:
    return E2BSandboxes(api_key=standin.api_key, template="base", timeout_s=300)


async def _made(sandboxes: E2BSandboxes) -> E2BSandbox:
    box = await sandboxes.create(build_id="b-1", metadata={"build_id": "b-1"})
    await box.run(f"mkdir -p {PROJECT_DIR}", timeout=30)
    return box


async def test_commands_files_listing_and_the_snapshot_tar_read(sandboxes: E2BSandboxes) -> None:
    box = await _made(sandboxes)
    result = await box.run("echo out; echo err >&2; exit 7", timeout=30)
    assert result.exit_code == 7
    assert sorted(result.output.split()) == ["err", "out"]
    blob = bytes(range(256)) * 64
    await box.write_file(f"{PROJECT_DIR}/bin/blob.dat", blob)
    await box.write_file(f"{PROJECT_DIR}/app.py", b"print('hi')\n")
    assert await box.read_file(f"{PROJECT_DIR}/bin/blob.dat") == blob
    assert await box.list_dir(PROJECT_DIR, depth=2) == [
        f"{PROJECT_DIR}/app.py", f"{PROJECT_DIR}/bin/", f"{PROJECT_DIR}/bin/blob.dat",
    ]  # fmt: skip
    with pytest.raises(FileNotFoundError):
        await box.read_file(f"{PROJECT_DIR}/missing")
    collected = await collect_sandbox(box, max_file_bytes=1 << 20)
    assert sorted(f.path for f in collected.files) == ["app.py", "bin/blob.dat"]
    await box.kill()


async def test_a_command_cut_by_its_timeout_keeps_its_output(sandboxes: E2BSandboxes) -> None:
    box = await _made(sandboxes)
    started = asyncio.get_running_loop().time()
    result = await box.run("echo before; sleep 900; echo never", timeout=2)
    assert result.timed_out
    assert result.exit_code is None
    assert result.output.startswith("before\n")
    assert "never" not in result.output
    assert asyncio.get_running_loop().time() - started < 10
    assert (await box.run("pgrep -f '^sleep 900' || echo gone", timeout=10)).output == "gone\n"
    await box.kill()


async def test_the_preview_host_reaches_the_sandbox_server(
    sandboxes: E2BSandboxes, standin: RunningStandin
) -> None:
    box = await _made(sandboxes)
    await box.write_file(f"{PROJECT_DIR}/index.html", b"hello preview")
    await box.run(
        f"cd {PROJECT_DIR} && nohup python3 -m http.server $PORT --bind 127.0.0.1 "
        ">/dev/null 2>&1 &",
        timeout=10,
    )
    url = await box.preview_url(3000)
    assert url == f"https://3000-{box.id}.{standin.domain}"
    # The stand-in serves plain HTTP: the preview's host goes in the Host header.
    target, headers = preview_request(url + "/index.html", standin.url)
    async with httpx.AsyncClient() as client:
        answer = await client.get(target, headers=headers)
    assert answer.status_code == 200
    assert answer.text == "hello preview"
    await box.kill()


async def test_a_sandbox_killed_mid_command_is_gone_for_every_later_call(
    sandboxes: E2BSandboxes,
) -> None:
    box = await _made(sandboxes)
    other = await sandboxes.connect(box.id)
    running = asyncio.create_task(box.run("sleep 900", timeout=60))
    await asyncio.sleep(1)
    await other.kill()
    with pytest.raises(SandboxGone):
        await running  # the stream ends with the sandbox: a clear error, no hang
    with pytest.raises(SandboxGone):
        await box.run("echo x", timeout=10)
    with pytest.raises(SandboxGone):
        await box.read_file(f"{PROJECT_DIR}/x")
    with pytest.raises(SandboxGone):
        await sandboxes.connect(box.id)


async def test_pause_keeps_state_and_connect_resumes(sandboxes: E2BSandboxes) -> None:
    box = await _made(sandboxes)
    shell = await box.open_shell()
    await shell.run("export KEPT=yes; cd /tmp", timeout=10)
    await box.run("nohup sleep 600 >/dev/null 2>&1 &", timeout=10)
    await box.pause()
    with pytest.raises(SandboxGone):  # documented difference: paused answers as not found
        await box.run("echo x", timeout=10)
    again = await sandboxes.connect(box.id)
    assert (await again.run("pgrep -x sleep >/dev/null && echo alive", timeout=10)).output == (
        "alive\n"
    )
    assert (await shell.run("echo $KEPT $PWD", timeout=10)).output == "yes /tmp\n"
    await again.kill()


async def test_where_the_standin_is_not_e2b_each_difference_documented(
    standin: RunningStandin, tmp_path: Path
) -> None:
    """The module docstrings list where the stand-in is not E2B; this pins each one, so a change
    to either is seen (through the SDK itself, as production's calls go)."""
    sdk = await e2b.AsyncSandbox.create(api_key=standin.api_key, timeout=300)
    try:
        await sdk.commands.run(f"mkdir -p {PROJECT_DIR}", timeout=30)
        # Pids are the host's: the started command's pid is a live process of this machine.
        handle = await sdk.commands.run("sleep 30", background=True, timeout=60)
        assert os.path.exists(f"/proc/{handle.pid}")  # noqa: ASYNC240 - one stat, in a test
        # Stdin is not implemented: E2B would take it, the stand-in answers UNIMPLEMENTED.
        with pytest.raises(e2b.SandboxException, match=r"(?i)unimplemented|not implemented"):
            await sdk.commands.send_stdin(handle.pid, "x\n")
        await handle.kill()
        # File calls reach the project folder only (commands see the whole sandbox).
        await sdk.files.write(f"{PROJECT_DIR}/inside.txt", "ok")
        assert await sdk.files.read(f"{PROJECT_DIR}/inside.txt") == "ok"
        assert (await sdk.commands.run("cat /etc/hostname >/dev/null && echo seen")).stdout
        with pytest.raises(e2b.SandboxException):
            await sdk.files.read("/etc/hostname")
    finally:
        await sdk.kill()
    # State is in memory: a second stand-in (as after a restart) knows no sandbox of the first.
    async with serve(tmp_path / "second") as second:
        with pytest.raises(e2b.SandboxException):
            await e2b.AsyncSandbox.connect(
                sdk.sandbox_id, api_key=second.api_key, api_url=second.env["E2B_API_URL"]
            )
