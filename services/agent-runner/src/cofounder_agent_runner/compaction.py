"""Context compaction: when the prompt nears the model's context window, the middle of the
conversation is replaced by a summary; the first turn and the recent turns are kept.

The summary is mechanical (what the agent said and which tools it called with what outcome,
each cut short) rather than written by the model: it costs no model call, cannot fail, and is
deterministic, so a resumed run compacts exactly as the original would have. The result is
persisted as a ``compaction`` checkpoint.

Shape: ``[first user turn + summary, A_k, U_k, ..., A_n, U_n]``: the kept tail starts at an
assistant turn, so every ``tool_use`` is still answered by the next message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["compact"]

_KEEP_TURNS: Final = 4  # assistant turns kept verbatim at the end
_LINE: Final = 160


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _LINE else flat[: _LINE - 1] + "…"


def _summarise(messages: Sequence[dict[str, Any]]) -> str:
    lines: list[str] = []
    for message in messages:
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": str(content)}]
        for block in blocks:
            kind = block.get("type")
            if kind == "text" and message.get("role") == "assistant":
                lines.append(f"- said: {_short(block.get('text', ''))}")
            elif kind == "tool_use":
                arguments = json.dumps(block.get("input"), sort_keys=True)
                lines.append(f"- called {block.get('name')}: {_short(arguments)}")
            elif kind == "tool_result":
                result = block.get("content")
                text = result if isinstance(result, str) else "[non-text result]"
                status = "error" if block.get("is_error") else "ok"
                lines.append(f"  -> {status}: {_short(text)}")
    return "\n".join(lines)


def compact(
    messages: Sequence[dict[str, Any]], *, keep_turns: int = _KEEP_TURNS
) -> list[dict[str, Any]] | None:
    """The compacted conversation, or None when there is no middle to compact."""
    assistant_at = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if len(assistant_at) <= keep_turns:
        return None
    tail_start = assistant_at[-keep_turns]
    middle = messages[1:tail_start]
    if not middle:
        return None
    first = messages[0]
    content = (
        first["content"]
        if isinstance(first["content"], list)
        else [{"type": "text", "text": first["content"]}]
    )
    summary = {
        "type": "text",
        "text": "Earlier work in this build, summarised to save context (files you wrote are "
        "still in the project; re-read them when needed):\n" + _summarise(middle),
    }
    return [{"role": "user", "content": [*content, summary]}, *messages[tail_start:]]
