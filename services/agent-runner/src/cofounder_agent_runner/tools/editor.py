"""``str_replace_based_edit_tool`` with the semantics of Anthropic's ``text_editor_20250728``.

Commands: ``view`` (a file with line numbers, optionally ``view_range: [start, end]`` with ``-1``
for the end; a folder lists two levels), ``create`` (a new file; an existing one is refused, so a
model cannot clobber work by accident), ``str_replace`` (``old_str`` must occur exactly once;
the file is untouched otherwise), ``insert`` (after ``insert_line``, 0 = at the top). Errors are
phrased so the model can recover: they say what was wrong and what to do instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cofounder_agent_runner.tools.definitions import EDITOR_MAX_CHARACTERS
from cofounder_sandbox.base import Sandbox, confine

__all__ = ["ToolError", "edit"]

_SNIPPET_LINES: Final = 4


class ToolError(Exception):
    """A tool failure the model sees as an ``is_error`` result."""


def _numbered(text: str, first: int = 1) -> str:
    return "\n".join(f"{n:6}\t{line}" for n, line in enumerate(text.split("\n"), first))


def _cut(text: str) -> str:
    if len(text) <= EDITOR_MAX_CHARACTERS:
        return text
    return (
        text[:EDITOR_MAX_CHARACTERS]
        + f"\n<response clipped: the output was {len(text)} characters; view a smaller "
        "view_range, or use grep to find the lines you need>"
    )


async def _read_text(sandbox: Sandbox, path: str) -> str:
    try:
        data = await sandbox.read_file(path)
    except FileNotFoundError:
        raise ToolError(f"The path {path} does not exist. Please provide a valid path.") from None
    except IsADirectoryError:
        raise ToolError(f"The path {path} is a directory; this command needs a file.") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ToolError(f"{path} is not a UTF-8 text file; it cannot be edited here.") from None


def _str(input_: Mapping[str, Any], key: str, command: str) -> str:
    value = input_.get(key)
    if not isinstance(value, str):
        raise ToolError(f"Parameter `{key}` is required for command: {command}")
    return value


async def _view(sandbox: Sandbox, path: str, view_range: Any) -> str:
    if await sandbox.is_dir(path):
        if view_range is not None:
            raise ToolError("The `view_range` parameter is not allowed when `path` is a directory.")
        entries = await sandbox.list_dir(path, depth=2)
        return (
            f"Here are the files and directories up to 2 levels deep in {path}, excluding hidden "
            "items and dependency folders:\n" + "\n".join([path, *entries])
        )
    text = await _read_text(sandbox, path)
    lines = text.split("\n")
    first = 1
    if view_range is not None:
        if (
            not isinstance(view_range, list)
            or len(view_range) != 2
            or not all(isinstance(n, int) for n in view_range)
        ):
            raise ToolError("Invalid `view_range`. It should be a list of two integers.")
        start, end = view_range
        if not 1 <= start <= len(lines):
            raise ToolError(
                f"Invalid `view_range`: {view_range}. Its first element `{start}` should be "
                f"within the range of lines of the file: [1, {len(lines)}]"
            )
        if end != -1 and not start <= end <= len(lines):
            raise ToolError(
                f"Invalid `view_range`: {view_range}. Its second element `{end}` should be -1 "
                f"or within [{start}, {len(lines)}]"
            )
        lines = lines[start - 1 :] if end == -1 else lines[start - 1 : end]
        first = start
    body = _numbered("\n".join(lines), first)
    return _cut(f"Here's the result of running `cat -n` on {path}:\n{body}")


async def _create(sandbox: Sandbox, path: str, input_: Mapping[str, Any]) -> str:
    text = _str(input_, "file_text", "create")
    if await sandbox.exists(path):
        raise ToolError(
            f"File already exists at: {path}. Cannot overwrite files using command `create`; "
            "use `str_replace` to change it."
        )
    await sandbox.write_file(path, text.encode())
    return f"File created successfully at: {path}"


def _snippet(text: str, line: int, span: int) -> str:
    lines = text.split("\n")
    start = max(0, line - _SNIPPET_LINES)
    end = min(len(lines), line + span + _SNIPPET_LINES)
    return _numbered("\n".join(lines[start:end]), start + 1)


async def _str_replace(sandbox: Sandbox, path: str, input_: Mapping[str, Any]) -> str:
    old = _str(input_, "old_str", "str_replace")
    new = input_.get("new_str") or ""
    if not isinstance(new, str):
        raise ToolError("Parameter `new_str` must be a string")
    if not old:
        raise ToolError("Parameter `old_str` must not be empty.")
    text = await _read_text(sandbox, path)
    count = text.count(old)
    if count == 0:
        raise ToolError(
            f"No replacement was performed, old_str `{old}` did not appear verbatim in {path}."
        )
    if count > 1:
        lines = []
        at = text.find(old)
        while at >= 0:
            lines.append(text.count("\n", 0, at) + 1)
            at = text.find(old, at + 1)
        raise ToolError(
            f"No replacement was performed. Multiple occurrences of old_str `{old}` in lines "
            f"{lines}. Please ensure it is unique."
        )
    at = text.find(old)
    updated = text.replace(old, new, 1)
    await sandbox.write_file(path, updated.encode())
    line = text.count("\n", 0, at)
    return (
        f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet of "
        f"{path}:\n{_snippet(updated, line, new.count(chr(10)))}\n"
        "Review the changes and make sure they are as expected."
    )


async def _insert(sandbox: Sandbox, path: str, input_: Mapping[str, Any]) -> str:
    new = _str(input_, "insert_text", "insert")
    line = input_.get("insert_line")
    if not isinstance(line, int) or isinstance(line, bool):
        raise ToolError("Parameter `insert_line` is required for command: insert")
    text = await _read_text(sandbox, path)
    lines = text.split("\n")
    if not 0 <= line <= len(lines):
        raise ToolError(
            f"Invalid `insert_line` parameter: {line}. It should be within the range of lines "
            f"of the file: [0, {len(lines)}]"
        )
    updated = "\n".join([*lines[:line], *new.split("\n"), *lines[line:]])
    await sandbox.write_file(path, updated.encode())
    return (
        f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet of "
        f"the edited file:\n{_snippet(updated, line, new.count(chr(10)) + 1)}\n"
        "Review the changes and make sure they are as expected (correct indentation, no "
        "duplicate lines)."
    )


async def edit(sandbox: Sandbox, input_: Mapping[str, Any]) -> str:
    """Run one editor command; raises :class:`ToolError` with a message for the model."""
    command = input_.get("command")
    raw_path = input_.get("path")
    if not isinstance(raw_path, str) or not raw_path:
        raise ToolError("Parameter `path` is required")
    try:
        path = confine(raw_path)
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    try:
        if command == "view":
            return await _view(sandbox, path, input_.get("view_range"))
        if command == "create":
            return await _create(sandbox, path, input_)
        if command == "str_replace":
            return await _str_replace(sandbox, path, input_)
        if command == "insert":
            return await _insert(sandbox, path, input_)
    except PermissionError as exc:
        raise ToolError(str(exc)) from None
    raise ToolError(
        f"Unrecognized command {command!r}. The allowed commands are: view, create, "
        "str_replace, insert."
    )
