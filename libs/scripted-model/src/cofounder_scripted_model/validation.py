"""The request checks the Messages API makes, with its wording, so that an agent that would be
refused in production is refused here too (``invalid_request_error``, status 400)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

from cofounder_scripted_model.caching import iter_blocks

__all__ = ["IMAGE_SIGNATURES", "KNOWN_TOOL_TYPES", "MAX_BREAKPOINTS", "validate"]

MAX_BREAKPOINTS: Final = 4
#: The image types the API takes, and the first bytes each file starts with.
IMAGE_SIGNATURES: Final[Mapping[str, tuple[bytes, ...]]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
#: The API's limit on one image's base64 data.
MAX_IMAGE_BASE64: Final = 5 * 1024 * 1024

#: Anthropic-defined (server and client) tool types this server accepts, with the name each needs.
KNOWN_TOOL_TYPES: Final[Mapping[str, str | None]] = {
    "custom": None,
    "bash_20241022": "bash",
    "bash_20250124": "bash",
    "text_editor_20241022": "str_replace_editor",
    "text_editor_20250124": "str_replace_editor",
    "text_editor_20250429": "str_replace_based_edit_tool",
    "text_editor_20250728": "str_replace_based_edit_tool",
    "web_search_20250305": "web_search",
    "computer_20250124": "computer",
}


# The checkers below return the first problem they find: one return per check, on purpose.


def _text(fields: Mapping[str, Any], key: str) -> str | None:
    """``fields[key]`` when it is a non-empty string (what the API's "Field required" asks)."""
    value = fields.get(key)
    return value if isinstance(value, str) and value else None


def _tools(tools: Any) -> str | None:  # noqa: PLR0911
    if tools is None:
        return None
    if not isinstance(tools, list):
        return "tools: Input should be a valid list"
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            return f"tools.{i}: Input should be a valid dictionary"
        kind = tool.get("type", "custom")
        if kind not in KNOWN_TOOL_TYPES:
            return (
                f"tools.{i}: Input tag '{kind}' found using 'type' does not match any of the "
                "expected tags"
            )
        name = _text(tool, "name")
        if name is None:
            return f"tools.{i}.name: Field required"
        expected = KNOWN_TOOL_TYPES[kind]
        if expected is not None and name != expected:
            return f"tools.{i}.name: Input should be '{expected}'"
        if kind == "custom" and not isinstance(tool.get("input_schema"), Mapping):
            return f"tools.{i}.custom.input_schema: Field required"
        if name in names:
            return f"tools: Tool names must be unique. Found duplicate: {name}"
        names.add(name)
    return None


def _ids(content: Any, type_: str, key: str) -> list[Any]:
    """The ``key`` of every ``type_`` block of a message's content (none unless a list)."""
    blocks = content if isinstance(content, list) else []
    return [b.get(key) for b in blocks if isinstance(b, Mapping) and b.get("type") == type_]


def _tool_pairs(messages: list[Any]) -> str | None:
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return f"messages.{i}.content: Field required"
    if messages and messages[0].get("role") != "user":
        return 'messages: first message must use the "user" role'
    for i, message in enumerate(messages):
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        if message.get("role") == "assistant":
            uses = _ids(blocks, "tool_use", "id")
            if not uses:
                continue
            following = messages[i + 1] if i + 1 < len(messages) else None
            answered = set(
                _ids(following.get("content") if following else None, "tool_result", "tool_use_id")
            )
            missing = [u for u in uses if u not in answered]
            if missing:
                return (
                    f"messages.{i + 1 if following is not None else i}: `tool_use` ids were found "
                    "without `tool_result` blocks immediately after: "
                    f"{', '.join(map(str, missing))}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
        else:
            previous = messages[i - 1] if i > 0 else None
            offered = set(_ids(previous.get("content") if previous else None, "tool_use", "id"))
            for j, b in enumerate(blocks):
                if (
                    isinstance(b, Mapping)
                    and b.get("type") == "tool_result"
                    and b.get("tool_use_id") not in offered
                ):
                    return (
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {b.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous "
                        "message."
                    )
    return None


def _image(block: Mapping[str, Any], where: str) -> str | None:  # noqa: PLR0911
    """An image block: a base64 source of a type the API takes, whose data decodes to a file
    of that type (the API answers "Could not process image" for one that does not)."""
    source = block.get("source")
    if not isinstance(source, Mapping):
        return f"{where}.source: Field required"
    if source.get("type") != "base64":
        return f"{where}.source.type: Input should be 'base64', 'url' or 'file'"
    media_type = source.get("media_type")
    if not isinstance(media_type, str) or media_type not in IMAGE_SIGNATURES:
        return (
            f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    data = _text(source, "data")
    if data is None:
        return f"{where}.source.base64.data: Field required"
    if len(data) > MAX_IMAGE_BASE64:
        return (
            f"{where}.source.base64: image exceeds 5 MB maximum: {len(data)} bytes > 5242880 bytes"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return f"{where}.source.base64.data: The image data is not valid base64"
    if not raw.startswith(IMAGE_SIGNATURES[media_type]):
        return f"{where}.source.base64.data: Could not process image: it is not a {media_type}"
    return None


def _images(messages: list[Any]) -> str | None:
    """Image blocks, in a message's content or inside a ``tool_result``'s content."""
    for i, message in enumerate(messages):
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else []):
            if not isinstance(block, Mapping):
                continue
            inner = block.get("content") if block.get("type") == "tool_result" else None
            candidates = [(f"messages.{i}.content.{j}", block)] + [
                (f"messages.{i}.content.{j}.content.{k}", b)
                for k, b in enumerate(inner if isinstance(inner, list) else [])
                if isinstance(b, Mapping)
            ]
            for where, candidate in candidates:
                if candidate.get("type") == "image":
                    problem = _image(candidate, where)
                    if problem:
                        return problem
    return None


def validate(body: Any) -> str | None:  # noqa: PLR0911
    """The API's message for the first problem in ``body``, or None when it is acceptable."""
    if not isinstance(body, Mapping):
        return "Request body must be a JSON object"
    if _text(body, "model") is None:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Input should be a valid integer greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return (
            "messages: Field required"
            if messages is None
            else "messages: at least one message is required"
        )
    problem = _tools(body.get("tools")) or _tool_pairs(messages) or _images(messages)
    if problem:
        return problem
    breakpoints = sum(1 for _, marked, _ in iter_blocks(body) if marked)
    if breakpoints > MAX_BREAKPOINTS:
        return (
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {breakpoints}."
        )
    return None
