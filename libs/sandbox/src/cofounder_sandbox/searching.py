"""The glob and grep tools, run inside the sandbox (a ``python3`` program each), by both kinds.

Their patterns are the model's. A regular expression that backtracks for minutes (``(a+)+$``
against one line of ``a``) or a glob with many stars must cost the sandbox's own CPU under a
timeout, never the runner's: a match in the runner holds its interpreter lock (``re`` does not
release it), which stopped the event loop of every build the runner drives, lease renewals
included. Inside, it is one more command: the sandbox's limits and :data:`TIMEOUT_S` bound it.

The programs read files with ``lstat`` first: a symlink, a FIFO (whose ``open`` would wait for a
writer) or a file over the size limit is passed over.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Awaitable, Callable
from typing import Any, Final

from cofounder_sandbox.base import CommandResult

__all__ = ["GLOB", "GREP", "TIMEOUT_S", "SearchesInside", "run_program"]

#: How long a glob or grep may take before it is stopped and reported to the model.
TIMEOUT_S: Final = 60.0

_COMMON: Final = """
import json, os, stat, sys
root = sys.argv[1]
if not os.path.exists(root):
    sys.exit(f"{root} does not exist")
skip = {"node_modules", ".git", "__pycache__", ".venv", "dist", "build"}
"""

GLOB: Final = (
    _COMMON
    + """
import pathlib
pattern, out = sys.argv[2], []
for m in pathlib.Path(root).glob(pattern):
    if skip & set(m.relative_to(root).parts[:-1]):
        continue
    out.append(str(m) + ("/" if m.is_dir() else ""))
    if len(out) >= 1000:
        break
print(json.dumps(sorted(out)))
"""
)

GREP: Final = (
    _COMMON
    + """
import fnmatch, re
pattern, include = re.compile(sys.argv[2]), sys.argv[3] or None
files = [root] if os.path.isfile(root) else []
if not files:
    for cur, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        files += [os.path.join(cur, n) for n in sorted(names)]
out = []
for f in files:
    if include and not fnmatch.fnmatch(os.path.basename(f), include):
        continue
    try:
        info = os.lstat(f)
        if not stat.S_ISREG(info.st_mode) or info.st_size > 2 * 1024 * 1024:
            continue
        with open(f, "rb") as file:
            data = file.read()
    except OSError:
        continue
    if b"\\0" in data[:8192]:
        continue
    for n, line in enumerate(data.decode(errors="replace").splitlines(), 1):
        if pattern.search(line):
            out.append(f"{f}:{n}:{line[:300]}")
            if len(out) >= 500:
                print(json.dumps(out)); sys.exit()
print(json.dumps(out))
"""
)


async def run_program(
    run: Callable[..., Awaitable[CommandResult]], program: str, *args: str, what: str
) -> Any:
    """Run ``program`` with ``args`` through the sandbox's ``run`` and decode what it printed
    (JSON). :class:`ValueError` with the program's last line (a bad pattern: ``re.error: ...``)
    when it fails, or with what happened when it took longer than :data:`TIMEOUT_S`."""
    quoted = " ".join(shlex.quote(a) for a in args)
    result = await run(f"python3 -I -c {shlex.quote(program)} {quoted}", timeout=TIMEOUT_S)
    if result.timed_out:
        raise ValueError(
            f"{what} was stopped after {TIMEOUT_S:.0f} s (a pattern that backtracks, or too "
            "many files: narrow the pattern or the path)"
        )
    if result.exit_code != 0:
        lines = [line for line in result.output.strip().splitlines() if line.strip()]
        raise ValueError(lines[-1] if lines else f"{what} failed (exit {result.exit_code})")
    found = json.loads(result.output)
    # Names that are not UTF-8 come back as lone surrogates, which no event or checkpoint can
    # encode: shown with U+FFFD instead.
    return [
        f.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if isinstance(f, str) else f
        for f in found
    ]


class SearchesInside:
    """The ``glob`` and ``grep`` of a sandbox, for any sandbox that can ``run`` a command."""

    run: Callable[..., Awaitable[CommandResult]]

    async def glob(self, pattern: str, root: str) -> list[str]:
        found: list[str] = await run_program(self.run, GLOB, root, pattern, what="glob")
        return found

    async def grep(self, pattern: str, root: str, include: str | None) -> list[str]:
        found: list[str] = await run_program(
            self.run, GREP, root, pattern, include or "", what="grep"
        )
        return found
