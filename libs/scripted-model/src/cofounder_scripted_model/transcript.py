"""Transcripts: what the scripted model says, turn by turn, in a YAML file a person can read.

```yaml
name: demo-webapp
turns:
  - text: "I'll start with the server."          # optional text block before the tools
    tools:                                         # tool_use blocks, run in order by the agent
      - name: str_replace_based_edit_tool
        input: {command: create, path: /home/user/project/app.py, file_text: "..."}
  - tools:
      - name: bash
        input: {command: "python -m unittest -q"}
    on_error:                                      # served instead when the previous turn's
      text: "The tests failed; let me look."       # results held an error (once per turn)
      tools:
        - name: bash
          input: {command: "cat test_output.log"}
```

Which turn a request gets is worked out from the request alone (the server keeps no session):
every ``tool_use`` id the server writes names its turn (``toolu_s0004_0``; ``toolu_r0004_0`` for
an ``on_error`` reply), so the last assistant message says where the conversation is, even after
the agent has compacted the middle of it. After the last turn the model answers with text only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = ["Position", "Reply", "Transcript", "TranscriptError", "load", "load_builtin"]

_TOOL_ID: Final = re.compile(r"^toolu_([sr])(\d{4})_\d+$")


class TranscriptError(ValueError):
    """A transcript file that cannot be replayed, with the place of the mistake."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The assistant content of one turn: optional text, then tool calls."""

    text: str | None
    tools: tuple[tuple[str, Mapping[str, Any]], ...]

    def blocks(self, turn: int, *, recovery: bool) -> list[dict[str, Any]]:
        """The API content blocks, with tool ids that name the turn."""
        kind = "r" if recovery else "s"
        out: list[dict[str, Any]] = []
        if self.text:
            out.append({"type": "text", "text": self.text})
        for i, (name, input_) in enumerate(self.tools):
            out.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{kind}{turn:04d}_{i}",
                    "name": name,
                    "input": dict(input_),
                }
            )
        return out


@dataclass(frozen=True, slots=True)
class Turn:
    reply: Reply
    on_error: Reply | None


@dataclass(frozen=True, slots=True)
class Position:
    """Where a request is in the transcript: the turn to serve, and whether as a recovery."""

    turn: int
    recovery: bool


@dataclass(frozen=True, slots=True)
class Transcript:
    name: str
    turns: tuple[Turn, ...]

    def position(self, messages: Sequence[Mapping[str, Any]]) -> Position:
        """The turn that answers ``messages`` (see the module docstring)."""
        last_assistant = next((m for m in reversed(messages) if m.get("role") == "assistant"), None)
        if last_assistant is None:
            return Position(0, recovery=False)
        kind, turn = _turn_of(last_assistant)
        if kind is None:
            # Text only: past the end of the script, or a conversation we did not write.
            return Position(len(self.turns), recovery=False)
        last = messages[-1]
        if kind == "s":
            following = turn + 1
            if (
                following < len(self.turns)
                and self.turns[following].on_error is not None
                and last.get("role") == "user"
                and _has_error(last)
            ):
                return Position(following, recovery=True)
            return Position(following, recovery=False)
        return Position(turn, recovery=False)  # a recovery is served once; then the turn itself

    def reply(self, position: Position) -> list[dict[str, Any]] | None:
        """The content blocks for ``position``; None past the end."""
        if position.turn >= len(self.turns):
            return None
        turn = self.turns[position.turn]
        reply = turn.on_error if position.recovery and turn.on_error else turn.reply
        return reply.blocks(position.turn, recovery=position.recovery)


def _turn_of(message: Mapping[str, Any]) -> tuple[str | None, int]:
    content = message.get("content")
    if isinstance(content, list):
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "tool_use":
                match = _TOOL_ID.match(str(block.get("id", "")))
                if match:
                    return match.group(1), int(match.group(2))
    return None, -1


def _has_error(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    if not isinstance(content, list):
        return False
    return any(
        isinstance(b, Mapping) and b.get("type") == "tool_result" and b.get("is_error")
        for b in content
    )


def _reply(raw: Any, where: str) -> Reply:
    if not isinstance(raw, Mapping):
        raise TranscriptError(f"{where}: expected a mapping with 'text' and/or 'tools'")
    text = raw.get("text")
    if text is not None and not isinstance(text, str):
        raise TranscriptError(f"{where}.text: expected a string")
    tools_raw = raw.get("tools") or []
    if not isinstance(tools_raw, list):
        raise TranscriptError(f"{where}.tools: expected a list")
    tools: list[tuple[str, Mapping[str, Any]]] = []
    for i, tool in enumerate(tools_raw):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise TranscriptError(f"{where}.tools[{i}]: expected {{name: ..., input: {{...}}}}")
        input_ = tool.get("input") or {}
        if not isinstance(input_, Mapping):
            raise TranscriptError(f"{where}.tools[{i}].input: expected a mapping")
        tools.append((tool["name"], input_))
    if not text and not tools:
        raise TranscriptError(f"{where}: a turn needs text or tools")
    return Reply(text=text, tools=tuple(tools))


def parse(raw: Any, *, source: str = "<transcript>") -> Transcript:
    """A transcript from its parsed YAML; raises :class:`TranscriptError` naming the place."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("turns"), list):
        raise TranscriptError(f"{source}: expected a mapping with a 'turns' list")
    turns: list[Turn] = []
    for i, t in enumerate(raw["turns"]):
        where = f"{source}: turns[{i}]"
        reply = _reply(t, where)
        if not reply.tools:
            # A turn without tools ends the conversation; the script would stop there.
            raise TranscriptError(f"{where}: every scripted turn calls at least one tool")
        on_error = _reply(t["on_error"], f"{where}.on_error") if t.get("on_error") else None
        turns.append(Turn(reply=reply, on_error=on_error))
    return Transcript(name=str(raw.get("name") or source), turns=tuple(turns))


def load(path: str | Path) -> Transcript:
    """A transcript from a YAML file, or a built-in one by name (``demo-webapp``)."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        return load_builtin(str(path))
    return parse(yaml.safe_load(p.read_text()), source=str(p))


def load_builtin(name: str) -> Transcript:
    """One of the transcripts shipped in this package."""
    ref = resources.files("cofounder_scripted_model") / "transcripts" / f"{name}.yaml"
    if not ref.is_file():
        raise TranscriptError(f"no built-in transcript named {name!r}")
    return parse(yaml.safe_load(ref.read_text()), source=name)
