"""The tools on every sandbox the runner has: editor semantics, bash sessions and timeouts,
confinement, truncation. One suite, parametrised over the local sandbox (both isolations), E2B
through the unmodified SDK against the local stand-in (:mod:`cofounder_e2b_standin`), and a real
E2B account (skipped without ``E2B_API_KEY``). No network but the real account's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from cofounder_agent_runner.tools.dispatcher import OUTPUT_LIMIT, ToolDispatcher, truncate
from cofounder_e2b_standin import serve
from cofounder_sandbox import searching
from cofounder_sandbox.base import PROJECT_DIR, PathOutsideProject, Sandbox, Sandboxes, confine
from cofounder_sandbox.e2b import E2BSandboxes
from cofounder_sandbox.local import LocalSandbox, LocalSandboxes

SANDBOXES = ["namespaces", "unsafe-none", "e2b-standin", "e2b-real"]
BUILD = "0195a0e2-aaaa-7000-8000-000000000001"


@pytest.fixture(params=SANDBOXES)
async def sandbox(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Sandbox]:
    kind = request.param
    if kind == "e2b-real" and not os.environ.get("E2B_API_KEY"):
        pytest.skip("E2B_API_KEY is not set: no real E2B account to run the suite against")
    sandboxes: Sandboxes
    async with contextlib.AsyncExitStack() as stack:
        if kind == "e2b-standin":
            standin = await stack.enter_async_context(serve(tmp_path / "e2b"))
            for name, value in standin.env.items():
                monkeypatch.setenv(name, value)
        if kind.startswith("e2b"):
            template = os.environ.get("E2B_TEMPLATE", "base")
            sandboxes = E2BSandboxes(api_key=os.environ["E2B_API_KEY"], template=template)
        else:
            sandboxes = LocalSandboxes(tmp_path / "sandboxes", isolation=kind, preview_wait_s=0.5)
        box = await sandboxes.create(build_id=BUILD, metadata={"build_id": BUILD})
        if kind.startswith("e2b"):
            await box.run(f"mkdir -p {PROJECT_DIR}", timeout=30)
        yield box
        await box.kill()


def local_only(sandbox: Sandbox) -> LocalSandbox:
    """Tests of the local sandbox's host-side file access: an E2B sandbox's file calls run in its
    own VM, where a symlink reaches nothing but the sandbox's own files."""
    if not isinstance(sandbox, LocalSandbox):
        pytest.skip("the host-side file access of the local sandbox only")
    return sandbox


@pytest.fixture
async def tools(sandbox: Sandbox) -> AsyncIterator[ToolDispatcher]:
    dispatcher = ToolDispatcher(sandbox, bash_timeout_s=2)
    yield dispatcher
    await dispatcher.close()


async def edit(tools: ToolDispatcher, **input_: object) -> tuple[str, bool]:
    outcome = await tools.run("str_replace_based_edit_tool", input_)
    assert isinstance(outcome.content, str)
    return outcome.content, outcome.is_error


async def test_str_replace_needs_exactly_one_match_and_leaves_the_file_alone_otherwise(
    tools: ToolDispatcher, sandbox: Sandbox
) -> None:
    path = f"{PROJECT_DIR}/a.py"
    await edit(tools, command="create", path=path, file_text="x = 1\ny = 1\nx = 1\n")
    original = await sandbox.read_file(path)

    text, is_error = await edit(
        tools, command="str_replace", path=path, old_str="z = 1", new_str="z = 2"
    )
    assert is_error
    assert "did not appear verbatim" in text
    assert await sandbox.read_file(path) == original

    text, is_error = await edit(
        tools, command="str_replace", path=path, old_str="x = 1", new_str="x = 2"
    )
    assert is_error
    assert "Multiple occurrences" in text
    assert "[1, 3]" in text
    assert await sandbox.read_file(path) == original

    text, is_error = await edit(
        tools, command="str_replace", path=path, old_str="y = 1", new_str="y = 5"
    )
    assert not is_error
    assert await sandbox.read_file(path) == b"x = 1\ny = 5\nx = 1\n"
    assert "     2\ty = 5" in text


async def test_view_ranges_directories_create_and_insert(
    tools: ToolDispatcher, sandbox: Sandbox
) -> None:
    path = "/home/user/project/src/notes.txt"
    body = "\n".join(f"line {n}" for n in range(1, 11))
    text, is_error = await edit(tools, command="create", path=path, file_text=body)
    assert not is_error

    text, _ = await edit(tools, command="view", path=path, view_range=[3, 5])
    assert text.splitlines()[1:] == ["     3\tline 3", "     4\tline 4", "     5\tline 5"]
    text, _ = await edit(tools, command="view", path=path, view_range=[9, -1])
    assert text.splitlines()[1:] == ["     9\tline 9", "    10\tline 10"]
    text, is_error = await edit(tools, command="view", path=path, view_range=[0, 2])
    assert is_error
    assert "[1, 10]" in text
    text, is_error = await edit(tools, command="view", path=path, view_range=[5, 99])
    assert is_error

    text, is_error = await edit(tools, command="view", path=PROJECT_DIR)
    assert not is_error
    assert f"{PROJECT_DIR}/src/" in text
    assert f"{PROJECT_DIR}/src/notes.txt" in text

    text, is_error = await edit(tools, command="create", path=path, file_text="clobber")
    assert is_error
    assert "already exists" in text
    assert (await sandbox.read_file(path)).decode() == body

    _, is_error = await edit(tools, command="insert", path=path, insert_line=0, insert_text="top")
    assert not is_error
    assert (await sandbox.read_file(path)).decode().splitlines()[:2] == ["top", "line 1"]
    text, is_error = await edit(tools, command="insert", path=path, insert_line=99, insert_text="x")
    assert is_error
    assert "insert_line" in text

    text, is_error = await edit(tools, command="view", path=f"{PROJECT_DIR}/missing.txt")
    assert is_error
    assert "does not exist" in text
    text, is_error = await edit(tools, command="undo_edit", path=path)
    assert is_error
    assert "Unrecognized command" in text


async def test_paths_outside_the_project_are_refused(
    tools: ToolDispatcher, sandbox: Sandbox, tmp_path: Path
) -> None:
    for path in ("/etc/passwd", f"{PROJECT_DIR}/../secret", "../../x", "/home/user/projectx/a"):
        text, is_error = await edit(tools, command="view", path=path)
        assert is_error, path
        assert "outside the project" in text

    local = local_only(sandbox)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    os.symlink(outside, local.workspace / "link.txt")
    text, is_error = await edit(tools, command="view", path=f"{PROJECT_DIR}/link.txt")
    assert is_error
    assert "outside the project" in text
    _, is_error = await edit(
        tools, command="str_replace", path=f"{PROJECT_DIR}/link.txt", old_str="secret", new_str="x"
    )
    assert is_error
    assert outside.read_text() == "secret"

    outcome = await tools.run("glob", {"pattern": "*", "path": "/etc"})
    assert outcome.is_error
    outcome = await tools.run("glob", {"pattern": "../*"})
    assert outcome.is_error
    outcome = await tools.run("grep", {"pattern": "root", "path": "/etc"})
    assert outcome.is_error
    with pytest.raises(PathOutsideProject):
        confine("/home/user/project/../../../etc")


async def test_no_editor_command_goes_through_a_symlink_bash_planted(
    tools: ToolDispatcher, sandbox: Sandbox, tmp_path: Path
) -> None:
    local_only(sandbox)
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.txt").write_text("host secret\n")
    planted = await tools.run(
        "bash", {"command": f"ln -s {host} out && ln -s {host}/secret.txt s && ln -s / root"}
    )
    assert not planted.is_error, planted.content
    for path in ("out/secret.txt", "s", "root/etc/passwd"):
        full = f"{PROJECT_DIR}/{path}"
        attempts: list[dict[str, object]] = [
            {"command": "view", "path": full},
            {"command": "str_replace", "path": full, "old_str": "host", "new_str": "mine"},
            {"command": "insert", "path": full, "insert_line": 0, "insert_text": "mine\n"},
            {"command": "create", "path": full, "file_text": "mine\n"},
            {"command": "create", "path": f"{PROJECT_DIR}/out/new.txt", "file_text": "mine\n"},
        ]
        for attempt in attempts:
            text, is_error = await edit(tools, **attempt)
            assert is_error, (attempt, text)
            assert "host secret" not in text
    assert sorted(p.name for p in host.iterdir()) == ["secret.txt"]
    assert (host / "secret.txt").read_text() == "host secret\n"
    for tool, args in (("grep", {"pattern": "secret|root:"}), ("glob", {"pattern": "**/*.txt"})):
        outcome = await tools.run(tool, args)
        assert "host secret" not in str(outcome.content)
        assert "secret.txt" not in str(outcome.content)


async def test_a_pattern_that_backtracks_costs_the_sandbox_not_the_runner(
    tools: ToolDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``(a+)+$`` against 27 ``a`` and a ``!`` takes minutes of backtracking. Matched in the
    runner, it held the interpreter lock, and every build's event loop with it; in the sandbox
    it is a command stopped at its timeout, and the model is told why."""
    monkeypatch.setattr(searching, "TIMEOUT_S", 3.0)
    await edit(tools, command="create", path=f"{PROJECT_DIR}/a.txt", file_text="a" * 27 + "!\n")
    longest = 0.0

    async def tick() -> None:
        nonlocal longest
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            longest = max(longest, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        outcome = await tools.run("grep", {"pattern": "(a+)+$"})
    finally:
        ticker.cancel()
    assert outcome.is_error
    assert "grep was stopped after 3 s" in str(outcome.content)
    assert longest < 1.0, f"the runner's loop stood still for {longest:.1f} s"
    fine = await tools.run("grep", {"pattern": "a+!$"})  # the sandbox still answers
    assert fine.content == f"{PROJECT_DIR}/a.txt:1:{'a' * 27}!"


async def test_the_editor_refuses_a_fifo_and_a_huge_file_instead_of_reading_them(
    tools: ToolDispatcher,
) -> None:
    """A FIFO (whose reading waits for a writer: a worker thread held for ever) and a sparse
    file of 2 GiB (made in a moment, read whole into the runner): each a quick tool error."""
    made = await tools.run(
        "bash", {"command": "mkfifo pipe && truncate -s 2G big.bin && echo made"}
    )
    assert "made" in str(made.content), made.content
    for name, says in (("pipe", "regular file"), ("big.bin", "over 16777216")):
        outcome = await asyncio.wait_for(
            tools.run(
                "str_replace_based_edit_tool", {"command": "view", "path": f"{PROJECT_DIR}/{name}"}
            ),
            timeout=20,
        )
        assert outcome.is_error, (name, outcome.content)
        assert says in str(outcome.content), (name, outcome.content)


async def test_a_flood_of_output_costs_the_runner_a_bounded_head_and_tail(
    sandbox: Sandbox,
) -> None:
    """20 MB printed: the runner keeps its first and last half megabyte and says how much went
    between (E2B's SDK kept every byte of it in memory)."""
    result = await sandbox.run(
        "head -c 20000000 /dev/zero | tr '\\0' x; echo; echo END", timeout=60
    )
    assert result.exit_code == 0
    assert len(result.output) < 1_100_000
    assert "bytes of output dropped" in result.output
    assert result.output.startswith("xxxx")
    assert result.output.rstrip().endswith("END")


async def test_bash_keeps_its_session_times_out_and_stays_usable(tools: ToolDispatcher) -> None:
    outcome = await tools.run(
        "bash", {"command": "mkdir -p sub && cd sub && export GREETING=hi && pwd"}
    )
    assert not outcome.is_error
    assert str(outcome.content).strip().endswith("/sub")

    outcome = await tools.run("bash", {"command": "echo $GREETING from $(basename $PWD)"})
    assert outcome.content == "hi from sub"

    outcome = await tools.run("bash", {"command": "echo before; sleep 30; echo never"})
    assert outcome.is_error
    assert "before" in str(outcome.content)
    assert "timed out after 2 s" in str(outcome.content)
    assert "never" not in str(outcome.content)

    outcome = await tools.run("bash", {"command": "echo $GREETING still in $(basename $PWD)"})
    assert not outcome.is_error
    assert outcome.content == "hi still in sub"

    outcome = await tools.run("bash", {"command": "echo oops >&2; false"})
    assert outcome.is_error
    assert "oops" in str(outcome.content)
    assert "exit status 1" in str(outcome.content)

    outcome = await tools.run("bash", {"command": "if then"})
    assert outcome.is_error
    assert "syntax error" in str(outcome.content)

    outcome = await tools.run("bash", {"restart": True})
    assert outcome.content == "tool has been restarted."
    outcome = await tools.run("bash", {"command": "basename $PWD; echo ${GREETING:-unset}"})
    assert outcome.content == "project\nunset"


async def test_a_background_server_survives_the_command_that_started_it(
    tools: ToolDispatcher, sandbox: Sandbox
) -> None:
    outcome = await tools.run(
        "bash",
        {
            "command": "nohup python3 -m http.server $PORT --bind 127.0.0.1 >/dev/null 2>&1 &\n"
            "echo ok"
        },
    )
    assert outcome.content == "ok"
    preview = await tools.run("start_preview", {"port": 3000})
    assert not preview.is_error, preview.content
    if isinstance(sandbox, LocalSandbox):
        assert tools.preview_url == f"http://127.0.0.1:{sandbox.port}"
    else:  # the host E2B's SDK builds: port-id.domain
        domain = os.environ.get("E2B_DOMAIN", "e2b.app")
        assert tools.preview_url == f"https://3000-{sandbox.id}.{domain}"
    # A timeout interrupts the foreground command only.
    await tools.run("bash", {"command": "sleep 30"})
    assert (await tools.run("start_preview", {"port": 3000})).is_error is False


async def test_long_output_is_truncated_with_a_note(tools: ToolDispatcher) -> None:
    outcome = await tools.run("bash", {"command": "python3 -c \"print('a' * 50000 + 'END')\""})
    text = str(outcome.content)
    assert not outcome.is_error
    assert len(text) < OUTPUT_LIMIT + 400
    assert "characters truncated" in text
    assert "the output was 50003 characters" in text
    assert text.startswith("aaaa")
    assert text.endswith("END")
    assert truncate("short") == "short"


async def test_the_environment_is_scrubbed(
    tools: ToolDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    await tools.close()
    outcome = await tools.run("bash", {"command": "env | sort"})
    assert "sk-ant-secret" not in str(outcome.content)
    assert "PORT=" in str(outcome.content)


async def test_search_preview_screenshot_and_finish(tools: ToolDispatcher) -> None:
    await edit(
        tools,
        command="create",
        path=f"{PROJECT_DIR}/web/app.ts",
        file_text="const x = 1\n// TODO: more\n",
    )
    await edit(
        tools, command="create", path=f"{PROJECT_DIR}/node_modules/dep/index.ts", file_text="TODO\n"
    )
    found = await tools.run("glob", {"pattern": "**/*.ts"})
    assert found.content == f"{PROJECT_DIR}/web/app.ts"
    hits = await tools.run("grep", {"pattern": "TODO", "include": "*.ts"})
    assert hits.content == f"{PROJECT_DIR}/web/app.ts:2:// TODO: more"
    bad = await tools.run("grep", {"pattern": "("})
    assert bad.is_error

    nothing = await tools.run("start_preview", {"port": 3000})
    assert nothing.is_error
    assert "nothing is listening" in str(nothing.content)
    shot = await tools.run("screenshot", {})
    assert shot.is_error
    assert "start_preview" in str(shot.content)
    # Only pages the sandbox serves: no file:, no other host, no Chromium flag for a URL.
    for url in ("file:///etc/passwd", "http://169.254.169.254/", "--gpu-launcher=id"):
        refused = await tools.run("screenshot", {"url": url})
        assert refused.is_error
        assert "a page served in the sandbox" in str(refused.content)
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        shot = await tools.run("screenshot", {"url": "http://127.0.0.1:1/"})
        assert shot.is_error
        assert "no headless Chromium" in str(shot.content)

    done = await tools.run("finish", {"summary": "  Built it. "})
    assert done.finished == "Built it."
    assert not done.is_error
    assert (await tools.run("finish", {})).is_error
    assert (await tools.run("no_such_tool", {})).is_error
    assert (await tools.run("bash", "not an object")).is_error


async def test_a_name_that_is_not_utf8_reaches_the_model_as_text_it_can_encode(
    tools: ToolDispatcher,
) -> None:
    """A file named with bytes that are not UTF-8: Python reads the name as lone surrogates,
    which no checkpoint or event can encode; the build's turn then failed at every retry."""
    made = await tools.run("bash", {"command": "printf hi > \"$(printf 'bad\\376.txt')\"; ls"})
    assert not made.is_error, made.content
    for name, input_ in (
        ("bash", {"command": "ls"}),
        ("str_replace_based_edit_tool", {"command": "view", "path": PROJECT_DIR}),
        ("glob", {"pattern": "*.txt"}),
        ("grep", {"pattern": "hi"}),
    ):
        outcome = await tools.run(name, input_)
        msgspec.json.encode(outcome.result_block("toolu_1"))  # what the checkpoint writes
        assert outcome.preview().encode()
