"""What the model sees: the system prompt (idea brief, Q&A, goal) and the request around the
conversation, with prompt-caching breakpoints where the prefix is stable.

Breakpoints (at most 4 are allowed; 3 are used): the last tool definition (tools never change),
the system prompt (fixed for the build), and the last block of the conversation (the rolling
end: each call reads what the previous one wrote and writes one turn more).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any, Final

from cofounder_agent_runner.tools.definitions import TOOL_DEFINITIONS
from cofounder_contracts import ContextReady
from cofounder_sandbox.base import PROJECT_DIR
from cofounder_snapshots.manifest import Manifest

__all__ = [
    "CACHED_TOOLS",
    "first_message",
    "request_messages",
    "sandbox_replaced",
    "system_blocks",
    "system_prompt",
]

_EPHEMERAL: Final = {"type": "ephemeral"}

#: The tool definitions with a breakpoint on the last one, built once.
CACHED_TOOLS: Final[list[dict[str, Any]]] = [
    *TOOL_DEFINITIONS[:-1],
    {**TOOL_DEFINITIONS[-1], "cache_control": _EPHEMERAL},
]

_RULES: Final = f"""\
You are the technical cofounder: you build the founder's app, alone, in a sandbox, with tools.

How to work:
- The project lives at {PROJECT_DIR}; the shell starts there. Keep every file inside it.
- Think, act, observe, repeat: make a small change, run it or its tests, read the result.
- Prefer simple, well-known stacks. Write tests for the main flows and run them.
- Long-running processes (dev servers) must run in the background (`nohup ... &`), or the
  command times out. Listen on port $PORT when it is set, else 3000.
- When the app runs, call start_preview with its port, then screenshot it to check it renders.
- When the app is built, tested and previewed, call finish with a short summary.
- A tool error is information: read it and fix the cause. Do not repeat a failing command
  unchanged.
- Never print or write secrets.
"""


def system_prompt(context: ContextReady) -> str:
    """The system prompt of a build: the rules, the idea brief, the interview and the goal."""
    brief = json.dumps(context.idea_brief, indent=2, sort_keys=True, ensure_ascii=False)
    qna = "\n".join(f"Q: {item.question}\nA: {item.answer}" for item in context.qna)
    return (
        f"{_RULES}\n"
        f"## The idea brief\n{brief}\n\n"
        f"## The founder's answers to the interview\n{qna or '(no answers)'}\n\n"
        f"## The goal of this build\n{context.goal}\n"
    )


def system_blocks(prompt: str, *, cached: bool = True) -> list[dict[str, Any]]:
    """The system prompt as one text block, a cache breakpoint unless ``cached`` is off."""
    block: dict[str, Any] = {"type": "text", "text": prompt}
    if cached:
        block["cache_control"] = _EPHEMERAL
    return [block]


def first_message(context: ContextReady) -> dict[str, Any]:
    """The conversation's opening user turn."""
    return {
        "role": "user",
        "content": [
            {
                "type": "text",
                "text": f"Build the app now. Goal: {context.goal}\n"
                "Work until it is built, tested and previewed, then call finish.",
            }
        ],
    }


def sandbox_replaced(restored: Manifest | None, *, restore_failed: bool = False) -> dict[str, Any]:
    """The user turn that tells the model its sandbox was lost and replaced, and what the new
    one holds: the latest snapshot (``restored``), or nothing (none was taken, or it could not
    be restored). Without it the model would go on from its last checkpoint as if the files it
    wrote since that snapshot, its installed packages and its servers were still there."""
    lost = (
        "Everything outside the project folder is gone too (installed packages, running servers)."
    )
    if restored is not None:
        taken = restored.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        held = (
            f"Its project folder holds the latest snapshot of your files (version "
            f"{restored.version}, taken {taken}, {len(restored.files)} files): what you changed "
            f"after it was taken is gone. {lost} Check the files, and start again what you need, "
            "before you go on."
        )
    else:
        why = (
            "the latest snapshot of your files could not be restored"
            if restore_failed
            else "no snapshot of your files had been taken"
        )
        held = (
            f"Its project folder is empty: {why}, so the files you wrote are gone. {lost} "
            "Write again what the app needs before you go on."
        )
    text = f"Your sandbox was lost, and this build goes on in a new one. {held}"
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def request_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with a breakpoint on its last block (stored messages stay unmarked)."""
    if not messages:
        return []
    last = messages[-1]
    content = last["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    marked = [*content[:-1], {**content[-1], "cache_control": _EPHEMERAL}]
    return [*messages[:-1], {**last, "content": marked}]
