"""README.md's "Trying the API locally" works by copy and paste (issue #16): its first ```bash
block, read from the README when the test runs (a README edit is what gets tested), runs in
bash at the checkout's root and ends with the demo build's end on the event stream.

Only what must change on a shared machine changes (see :func:`_script`): the test's own Redis
and a database of its own instead of ``cofounder`` on the developer's servers, and free ports
instead of 8000 and 8100. Everything else (``bin/cofounder``, the four background processes,
``seed demo --export``, the curl lines, ``kill $(jobs -p)``) runs as written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cofounder_testing.databases import empty_database
from cofounder_testing.servers import free_port
from cofounder_testing.services import USER_CONFIGURATION
from cofounder_testing.waiting import startup_deadline_s

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "### Trying the API locally"
#: How long the whole walkthrough may take: five processes start cold (each as long as the
#: harness lets a process start), then the demo build runs to its end.
DEADLINE_S = 180 + startup_deadline_s()
#: Lines the test appends after the block, to read what the block's shell variables held.
MARK = "WALKTHROUGH"
#: Settings in the test run's environment that would point the block elsewhere than the README
#: says (a real model, E2B, another gateway or port): a fresh shell has none of them.
CONFIGURATION = (
    *USER_CONFIGURATION,
    "ENVIRONMENT",
    "PORT",
    "HOST",
    "METRICS_PORT",
    "COFOUNDER_GATEWAY_URL",
    "GATEWAY_URL",
    "COFOUNDER_TOKEN",
    "ADMIN_TOKEN",
    "JWT_SECRET",
    "TOKEN",
    "PROJECT",
    "BUILD",
)
ENDS = ("build.completed", "build.failed")


def readme_block() -> str:
    """The first ```bash block of the README's "Trying the API locally"."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    found = re.search(r"^```bash\n(.*?)^```", text.split(SECTION, 1)[1], re.S | re.M)
    assert found, f"README.md's {SECTION!r} has no ```bash block"
    return found.group(1)


def _replace(script: str, pattern: str, replacement: str, *, count: int | None = None) -> str:
    """``pattern`` (a regex, multiline) replaced; the README must still have it (``count``
    times when given), or this test no longer knows what it runs."""
    new, n = re.subn(pattern, replacement, script, flags=re.M)
    assert n if count is None else n == count, (
        f"README.md's walkthrough changed: {pattern!r} matched {n} times; adjust "
        "tests/test_readme_walkthrough.py's substitutions"
    )
    return new


def _script(block: str, *, redis_url: str, database_url: str, gateway: int, model: int) -> str:
    """The README's block with the test's substitutions, between a prelude and an epilogue."""
    # The model's port: a free one for `--port 8100` and the runner's ANTHROPIC_BASE_URL.
    script = _replace(block, r"--port 8100\b", f"--port {model}", count=1)
    script = _replace(script, r"http://127\.0\.0\.1:8100\b", f"http://127.0.0.1:{model}")
    # The gateway's port: a free one in the curl lines (the gateway itself reads PORT and the
    # cofounder commands COFOUNDER_GATEWAY_URL, exported below).
    script = _replace(script, r"http://127\.0\.0\.1:8000\b", f"http://127.0.0.1:{gateway}")
    # `createdb ... cofounder` would make the developer's `cofounder` database: the test made
    # a database of its own (DATABASE_URL below) instead, so the line becomes a no-op (`:`).
    script = _replace(script, r"^createdb\b", ": createdb", count=1)
    assert not re.search(r"127\.0\.0\.1:(8000|8100)\b", script), script
    prelude = [
        # The test's own Redis and database (the README: "elsewhere: export REDIS_URL and
        # DATABASE_URL first"); `bin/cofounder db upgrade` migrates the empty database.
        f"export REDIS_URL={shlex.quote(redis_url)}",
        f"export DATABASE_URL={shlex.quote(database_url)}",
        # The gateway's port (GatewaySettings.port) and where the cofounder commands find it
        # (their default is http://127.0.0.1:8000; `seed demo --export` exports it again).
        f"export PORT={gateway}",
        f"export COFOUNDER_GATEWAY_URL=http://127.0.0.1:{gateway}",
        # Not a substitution: a step that fails is reported on stderr and fails the run, while
        # the shell goes on to the next line as a pasted one would.
        "__failed=0",
        "trap 'echo \"walkthrough: exit $? from: $BASH_COMMAND\" >&2; __failed=1' ERR",
    ]
    epilogue = [
        # What the block's variables held, for the assertions; then the steps' verdict.
        f'printf "{MARK} %s=%s\\n" TOKEN "$TOKEN" PROJECT "$PROJECT" BUILD "$BUILD"',
        "exit $__failed",
    ]
    return "\n".join([*prelude, script.rstrip("\n"), *epilogue]) + "\n"


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIGURATION}
    # bin/bootstrap installs uv when it is not on PATH: give it the uv running the tests.
    uv = os.environ.get("UV")
    if uv:
        env["PATH"] = f"{Path(uv).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _stop_group(bash: subprocess.Popen[bytes]) -> None:
    """Whatever the block left running (all of it in bash's process group): SIGTERM, time to
    shut down (the services finish in-flight work), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(bash.pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            bash.poll()  # reaped: a zombie bash would keep the group alive
            os.killpg(bash.pid, 0)  # ProcessLookupError once the group is empty
            time.sleep(0.2)
        os.killpg(bash.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        bash.wait(timeout=5)


def _remove_sandboxes(build: str, existed: bool) -> None:
    """The build's local sandbox folder (``.cofounder/sandboxes/local-<build>-*``, killed when
    the build ended), and the folders above it when this test made them."""
    sandboxes = ROOT / ".cofounder" / "sandboxes"
    if build:
        for home in sandboxes.glob(f"local-{build[:8]}-*"):
            with contextlib.suppress(OSError, ValueError):
                state = json.loads((home / "sandbox.json").read_text())
                if state.get("build_id") == build:
                    shutil.rmtree(home, ignore_errors=True)
    if not existed:
        for folder in (sandboxes, sandboxes.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: nothing of anyone else's


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _marked(out: str) -> dict[str, str]:
    found = re.findall(rf"^{MARK} (\w+)=(.*)$", out, re.M)
    return dict(found)


def _builds(out: str, build: str) -> Iterator[dict[str, object]]:
    """JSON objects that start a line of ``out`` and are the build ``build`` (a service's log
    line may follow on the same line: curl prints no newline, the block's ``echo`` does)."""
    decoder = json.JSONDecoder()
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            value, _ = decoder.raw_decode(line)
            if isinstance(value, dict) and value.get("id") == build and "status" in value:
                yield value


def _events(out: str) -> list[tuple[str, dict[str, object]]]:
    """The Server-Sent Events in ``out``: (event, data) in order."""
    found: list[tuple[str, dict[str, object]]] = []
    kind = ""
    for line in out.splitlines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind:
            with contextlib.suppress(ValueError):
                found.append((kind, json.loads(line.removeprefix("data: "))))
            kind = ""
    return found


@pytest.mark.timeout(DEADLINE_S + 120)
def test_the_readme_walkthrough_runs_by_copy_and_paste(
    own_redis_url: str, database_url: str, tmp_path: Path
) -> None:
    block = readme_block()
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    existed = (ROOT / ".cofounder" / "sandboxes").exists()
    started = time.monotonic()
    out = ""
    with (
        empty_database(database_url) as url,
        stdout.open("wb") as out_file,
        stderr.open("wb") as err_file,
    ):
        script = _script(
            block, redis_url=own_redis_url, database_url=url, gateway=free_port(), model=free_port()
        )
        (tmp_path / "walkthrough.sh").write_text(script)
        # Files, not pipes: a background process that outlives bash cannot hold the test up.
        bash = subprocess.Popen(
            ["bash", "-c", script],
            cwd=ROOT,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            start_new_session=True,  # its own process group: the finally stops all of it
        )
        try:
            try:
                code = bash.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                code = None
            out = stdout.read_text(errors="replace")
            took = time.monotonic() - started
            shown = (
                f"(after {took:.0f}s; the script: {tmp_path / 'walkthrough.sh'})\n"
                f"--- stdout (end) ---\n{_tail(stdout)}\n--- stderr (end) ---\n{_tail(stderr)}"
            )
            assert code is not None, f"the walkthrough did not end within {DEADLINE_S:.0f}s {shown}"
            assert code == 0, f"the walkthrough failed (bash exit {code}) {shown}"

            values = _marked(out)
            token, project, build = (values.get(k, "") for k in ("TOKEN", "PROJECT", "BUILD"))
            assert token.count(".") == 2, f"seed demo --export set no TOKEN (a JWT) {shown}"
            assert re.fullmatch(r"[0-9a-f-]{36}", project), f"no PROJECT {shown}"
            assert re.fullmatch(r"[0-9a-f-]{36}", build), f"builds create gave no id {shown}"

            got = list(_builds(out, build))
            assert got, f"GET /v1/builds/$BUILD printed no JSON build {build} {shown}"
            assert got[0]["project_id"] == project, got[0]

            events = [(kind, data) for kind, data in _events(out) if data.get("build_id") == build]
            kinds = [kind for kind, _ in events]
            assert kinds, f"the event stream printed no events of build {build} {shown}"
            ended = [kind for kind in kinds if kind in ENDS]
            assert ended == ["build.completed"], f"the build did not complete: {kinds} {shown}"
            # The stream ends with the build: nothing after its end but the status it ended in.
            after = kinds[kinds.index("build.completed") + 1 :]
            assert set(after) <= {"build.status_changed"}, kinds
            last = events[-1][1]
            assert kinds[-1] == "build.completed" or last.get("status") == "completed", kinds
            # "its preview URL appears [...] on the event stream"
            completed = next(data for kind, data in events if kind == "build.completed")
            assert str(completed.get("preview_url")).startswith("http"), completed
        finally:
            _stop_group(bash)
            _remove_sandboxes(_marked(out).get("BUILD", ""), existed)
