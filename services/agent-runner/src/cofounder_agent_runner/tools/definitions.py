"""The tool definitions sent to the model (Anthropic-defined ``bash`` and text editor, plus ours).

Kept as one constant so the request prefix is byte-identical on every call (prompt caching).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["EDITOR_MAX_CHARACTERS", "TOOL_DEFINITIONS"]

#: ``view`` output beyond this is cut (the editor tool's ``max_characters``).
EDITOR_MAX_CHARACTERS: Final = 20_000

TOOL_DEFINITIONS: Final[list[dict[str, Any]]] = [
    {"type": "bash_20250124", "name": "bash"},
    {
        "type": "text_editor_20250728",
        "name": "str_replace_based_edit_tool",
        "max_characters": EDITOR_MAX_CHARACTERS,
    },
    {
        "name": "glob",
        "description": "List files matching a glob pattern (e.g. '**/*.py'), relative to a folder "
        "of the project (default: the project root). Dependency folders are skipped.",
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string"},
                "path": {"type": "string", "description": "Folder to search from."},
            },
            "required": ["pattern"],
        },
    },
    {
        "name": "grep",
        "description": "Search file contents with a regular expression. Returns path:line:text "
        "for each match (at most 500).",
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "A Python regular expression."},
                "path": {"type": "string", "description": "File or folder (default: project)."},
                "include": {"type": "string", "description": "File name glob, e.g. '*.ts'."},
            },
            "required": ["pattern"],
        },
    },
    {
        "name": "start_preview",
        "description": "Expose a port of the sandbox where your dev server listens (start the "
        "server in the background first) and return its public URL.",
        "input_schema": {
            "type": "object",
            "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}},
            "required": ["port"],
        },
    },
    {
        "name": "screenshot",
        "description": "Take a screenshot of a page served in the sandbox (default: the preview) "
        "with headless Chromium and return it as an image.",
        "input_schema": {
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "description": "http(s) on localhost or 127.0.0.1, e.g. http://localhost:3000/",
                }
            },
        },
    },
    {
        "name": "finish",
        "description": "Call when the app is built, tested and previewed. Ends the build.",
        "input_schema": {
            "type": "object",
            "properties": {"summary": {"type": "string", "description": "What was built."}},
            "required": ["summary"],
        },
    },
]
