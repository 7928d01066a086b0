"""The tool dispatcher: runs the model's ``tool_use`` requests against one live sandbox.

A tool failure is an outcome with ``is_error`` (the model reads it and recovers), never an
exception: the loop goes on. What each tool does:

- ``bash`` (``bash_20250124``): a persistent shell session (``cd`` and variables carry over);
  ``restart: true`` starts a new one; each command has a timeout (``bash_timeout_s``, 120 s by
  default), after which it is interrupted and the result says so; a non-zero exit status makes
  the result an error (its output is kept). Output over :data:`OUTPUT_LIMIT` characters keeps its
  first and last halves with a note of how much was cut.
- ``str_replace_based_edit_tool``: see :mod:`cofounder_agent_runner.tools.editor`.
- ``glob`` / ``grep``: searches confined to the project.
- ``start_preview(port)``: waits for something to listen there and returns the public URL.
- ``screenshot(url?)``: headless Chromium inside the sandbox (the same command on E2B, where the
  template's browser is on PATH, and locally, where the host's is visible read-only in the jail),
  the PNG bounded in size (:mod:`cofounder_agent_runner.tools.images`) and returned as an image
  block inside the ``tool_result``; the outcome keeps it (``image``) for the screenshot store. A
  clear error when the sandbox has no Chromium.
- ``finish(summary)``: ends the build.
"""

from __future__ import annotations

import asyncio
import base64
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from cofounder_agent_runner.tools.editor import ToolError, edit
from cofounder_agent_runner.tools.images import MAX_HEIGHT, MAX_WIDTH, BoundedPng, bound_png
from cofounder_sandbox.base import PROJECT_DIR, PortNotForwarded, Sandbox, Shell, confine

__all__ = [
    "OUTPUT_LIMIT",
    "SCREENSHOT_MAX_BYTES",
    "ToolDispatcher",
    "ToolOutcome",
    "served_in_the_sandbox",
    "truncate",
]

#: Characters of tool output the model gets; beyond, the middle is cut with a note.
OUTPUT_LIMIT: Final = 30_000
_SCREENSHOT_FILE: Final = f"{PROJECT_DIR}/.cofounder-screenshot.png"
_BROWSERS: Final = "chromium chromium-browser google-chrome headless_shell"
#: Bytes of PNG the model gets at most (re-encoded smaller beyond: tools/images.py).
SCREENSHOT_MAX_BYTES: Final = 1_000_000


#: The hosts a screenshot may show: the sandbox's own servers.
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})


def served_in_the_sandbox(url: str) -> bool:
    """Whether ``url`` names a page served in the sandbox: ``http(s)`` on a loopback host, with
    no credentials and nothing Chromium could take for a flag (a leading ``-``) or a second
    argument (white space). Not ``file:``, ``chrome:``, ``data:`` or another host: the tool
    shows the app, nothing else the sandbox can reach."""
    if not url.isprintable() or any(c.isspace() for c in url) or url.startswith("-"):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and parts.hostname in _LOOPBACK
        and parts.username is None
        and parts.password is None
    )


#: Headless Chromium's flags. ``--no-sandbox``: Chromium's own sandbox needs user namespaces or a
#: setuid helper, and the sandbox forbids both (no capabilities, no_new_privs, no nested user
#: namespace); the browser runs inside the build's sandbox (bubblewrap's namespaces locally, the
#: E2B VM), which is the isolation boundary, as for every other process of the build.
#: ``--disable-dev-shm-usage``: the local sandbox's /dev/shm is not writable (its /tmp is).
#: A profile of its own under /tmp: HOME may hold the project's own dotfiles.
_CHROMIUM_FLAGS: Final = (
    "--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars "
    f"--no-first-run --no-default-browser-check --window-size={MAX_WIDTH},{MAX_HEIGHT}"
)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What goes back to the model as a ``tool_result``."""

    content: str | list[dict[str, Any]]
    is_error: bool = False
    finished: str | None = None  # the summary, when the tool was ``finish``
    image: BoundedPng | None = None  # the PNG in ``content``, when the tool was ``screenshot``
    image_of: str | None = None  # the URL the screenshot shows

    def __post_init__(self) -> None:
        # A name or output that is not UTF-8 reaches here as lone surrogates: encoded as is,
        # they would fail the turn's checkpoint and its events, at every retry of the build.
        if isinstance(self.content, str) and not _encodes(self.content):
            clean = self.content.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            object.__setattr__(self, "content", clean)

    def preview(self, limit: int = 200) -> str:
        """A short, single-line preview for events."""
        text = self.content if isinstance(self.content, str) else "[image]"
        flat = " ".join(text.split())
        return flat if len(flat) <= limit else flat[: limit - 1] + "…"

    def result_block(self, tool_use_id: str) -> dict[str, Any]:
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": tool_use_id,
            "content": self.content if self.content != "" else "(no output)",
        }
        if self.is_error:
            block["is_error"] = True
        return block


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters: first and last halves kept, the cut announced."""
    if len(text) <= limit:
        return text
    half = limit // 2
    cut = len(text) - 2 * half
    return (
        f"{text[:half]}\n\n[... {cut} characters truncated: the output was {len(text)} "
        f"characters; the first and last {half} are shown. Redirect long output to a file and "
        "read parts of it ...]\n\n"
        f"{text[-half:]}"
    )


class ToolDispatcher:
    """Runs tools in ``sandbox``; one per build, not shared between builds."""

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        bash_timeout_s: float = 120.0,
        screenshot_max_bytes: int = SCREENSHOT_MAX_BYTES,
    ) -> None:
        self.sandbox = sandbox
        self.bash_timeout_s = bash_timeout_s
        self.screenshot_max_bytes = screenshot_max_bytes
        self.preview_url: str | None = None
        self._preview_port: int | None = None
        self._shell: Shell | None = None
        self._handlers: dict[str, Callable[[Mapping[str, Any]], Awaitable[ToolOutcome]]] = {
            "bash": self._bash,
            "str_replace_based_edit_tool": self._edit,
            "glob": self._glob,
            "grep": self._grep,
            "start_preview": self._start_preview,
            "screenshot": self._screenshot,
            "finish": self._finish,
        }

    async def close(self) -> None:
        if self._shell is not None:
            await self._shell.close()
            self._shell = None

    async def run(self, name: str, input_: Any) -> ToolOutcome:
        """Run one tool; never raises for a tool's own failure."""
        if not isinstance(input_, Mapping):
            return ToolOutcome("the tool input must be a JSON object", is_error=True)
        try:
            handler = self._handlers.get(name)
            if handler is None:
                return ToolOutcome(f"there is no tool named {name!r}", is_error=True)
            return await handler(input_)
        except ToolError as exc:
            return ToolOutcome(str(exc), is_error=True)
        except (ValueError, PermissionError, OSError) as exc:
            return ToolOutcome(f"{name} failed: {exc}", is_error=True)

    async def _edit(self, input_: Mapping[str, Any]) -> ToolOutcome:
        return ToolOutcome(await edit(self.sandbox, input_))

    async def _finish(self, input_: Mapping[str, Any]) -> ToolOutcome:
        summary = input_.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise ToolError("`summary` is required: say what was built")
        return ToolOutcome("Build finished.", finished=summary.strip())

    async def _bash(self, input_: Mapping[str, Any]) -> ToolOutcome:
        if input_.get("restart"):
            await self.close()
            self._shell = await self.sandbox.open_shell()
            return ToolOutcome("tool has been restarted.")
        command = input_.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ToolError("`command` is required (or `restart: true`)")
        if self._shell is None:
            self._shell = await self.sandbox.open_shell()
        result = await self._shell.run(command, timeout=self.bash_timeout_s)
        output = truncate(result.output.removesuffix("\n"))
        if result.timed_out:
            return ToolOutcome(output, is_error=True)
        if result.exit_code:
            return ToolOutcome(
                f"{output}\n(exit status {result.exit_code})".lstrip("\n"), is_error=True
            )
        return ToolOutcome(output)

    async def _glob(self, input_: Mapping[str, Any]) -> ToolOutcome:
        pattern = input_.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ToolError("`pattern` is required")
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise ToolError("the pattern must be relative and stay inside the folder")
        root = confine(str(input_.get("path") or PROJECT_DIR))
        found = await self.sandbox.glob(pattern, root)
        return ToolOutcome("\n".join(found) if found else f"no files match {pattern} in {root}")

    async def _grep(self, input_: Mapping[str, Any]) -> ToolOutcome:
        pattern = input_.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ToolError("`pattern` is required")
        root = confine(str(input_.get("path") or PROJECT_DIR))
        include = input_.get("include")
        try:
            found = await self.sandbox.grep(
                pattern, root, include if isinstance(include, str) else None
            )
        except ValueError as exc:  # a bad regular expression, or one stopped at its timeout
            raise ToolError(f"grep failed: {exc}") from None
        return ToolOutcome(truncate("\n".join(found)) if found else f"no matches for {pattern!r}")

    async def _start_preview(self, input_: Mapping[str, Any]) -> ToolOutcome:
        port = input_.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ToolError("`port` must be an integer between 1 and 65535")
        try:
            url = await self.sandbox.preview_url(port)
        except PortNotForwarded as exc:
            raise ToolError(str(exc)) from None
        except ConnectionError as exc:
            raise ToolError(f"{exc}. Start the server in the background first.") from None
        self.preview_url = url
        self._preview_port = port
        return ToolOutcome(f"The preview is live at {url}")

    async def _screenshot(self, input_: Mapping[str, Any]) -> ToolOutcome:
        url = input_.get("url")
        if not isinstance(url, str) or not url:
            if self._preview_port is None:
                raise ToolError("no preview yet: call start_preview first, or pass `url`")
            url = self.sandbox.internal_url(self._preview_port)
        elif not served_in_the_sandbox(url):
            raise ToolError(
                "screenshot takes the URL of a page served in the sandbox: http or https on "
                f"localhost or 127.0.0.1 (e.g. http://localhost:3000/), not {url[:200]!r}"
            )
        command = (
            f"for b in {_BROWSERS}; do command -v $b >/dev/null && B=$b && break; done; "
            '[ -n "$B" ] || { echo "no headless Chromium in the sandbox"; exit 127; }; '
            'P=$(mktemp -d); "$B" ' + _CHROMIUM_FLAGS + ' --user-data-dir="$P" '
            f"--screenshot={_SCREENSHOT_FILE} {shlex.quote(url)} 2>&1 | grep -v dbus | tail -3; "
            'rm -rf "$P"'
        )
        result = await self.sandbox.run(command, timeout=60, browser=True)
        if result.exit_code == 127:
            raise ToolError(
                "screenshot is unavailable: the sandbox has no headless Chromium "
                "(chromium, chromium-browser or google-chrome). Check the page with curl instead."
            )
        try:
            data = await self.sandbox.read_file(_SCREENSHOT_FILE)
        except FileNotFoundError:
            raise ToolError(f"the screenshot failed: {result.output.strip()[:500]}") from None
        finally:
            await self.sandbox.run(f"rm -f {_SCREENSHOT_FILE}", timeout=10)
        try:
            # Off the loop: decoding and re-encoding take tens of milliseconds of CPU.
            png = await asyncio.to_thread(bound_png, data, max_bytes=self.screenshot_max_bytes)
        except ValueError as exc:
            raise ToolError(f"the screenshot failed: {exc}") from None
        note = " (re-encoded smaller to bound its size)" if png.reencoded else ""
        return ToolOutcome(
            [
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": base64.b64encode(png.data).decode(),
                    },
                },
                {"type": "text", "text": f"Screenshot of {url}, {png.width}x{png.height}{note}"},
            ],
            image=png,
            image_of=url,
        )
