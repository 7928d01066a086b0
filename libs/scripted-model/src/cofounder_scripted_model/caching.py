"""Usage as the API reports it, prompt caching included, computed from the request.

The prompt is the sequence tools → system → messages, cut into blocks (one per tool, system block
and message content block). A running SHA-256 over the blocks (``cache_control`` stripped) names
every prefix. A block carrying ``cache_control`` is a breakpoint: its prefix is written to the
cache when it is long enough (``min_tokens``, 1,024 as for most models) and not cached already.
A read finds, for each breakpoint, the longest cached prefix ending at most ``lookback`` blocks
before it (the API looks back about 20 blocks), which is what lets a rolling breakpoint at the end
of the conversation read the prefix the previous request wrote.

Tokens are estimated as one per four characters of the block's JSON: good enough for budgets and
for comparing runs with and without caching, which is what the server is for.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

__all__ = ["PromptCache", "Usage", "estimate_tokens", "iter_blocks"]

_ENCODE: Final = msgspec.json.Encoder(order="sorted").encode
_PER_MESSAGE_TOKENS: Final = 3


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def _strip(block: Any) -> Any:
    if isinstance(block, Mapping) and "cache_control" in block:
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def iter_blocks(body: Mapping[str, Any]) -> Iterator[tuple[Any, bool, int]]:
    """Every prompt block in order: (block, has cache_control, extra framing tokens)."""
    for tool in body.get("tools") or ():
        yield tool, isinstance(tool, Mapping) and "cache_control" in tool, 0
    system = body.get("system")
    if isinstance(system, str):
        yield {"type": "text", "text": system}, False, 0
    elif isinstance(system, list):
        for block in system:
            yield block, isinstance(block, Mapping) and "cache_control" in block, 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        role = message.get("role") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            yield {"role": role, "text": content}, False, _PER_MESSAGE_TOKENS
        elif isinstance(content, list):
            for i, block in enumerate(content):
                framing = _PER_MESSAGE_TOKENS if i == 0 else 0
                yield block, isinstance(block, Mapping) and "cache_control" in block, framing


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """The request's input tokens, estimated (what ``count_tokens`` answers)."""
    return sum(len(_ENCODE(_strip(b))) // 4 + f for b, _, f in iter_blocks(body))


@dataclass(slots=True)
class _Boundary:
    digest: bytes
    tokens: int


class PromptCache:
    """The prefixes written so far (with their expiry) and the usage of each new request."""

    def __init__(self, *, min_tokens: int = 1024, ttl_s: float = 300.0, lookback: int = 20) -> None:
        self.min_tokens = min_tokens
        self.ttl_s = ttl_s
        self.lookback = lookback
        self._written: dict[bytes, float] = {}

    def _live(self, digest: bytes, now: float) -> bool:
        expiry = self._written.get(digest)
        return expiry is not None and expiry > now

    def usage(self, body: Mapping[str, Any], *, now: float | None = None) -> Usage:
        """Price ``body`` against the cache, then record what it writes (and refresh reads)."""
        now = time.monotonic() if now is None else now
        h = hashlib.sha256(str(body.get("model", "")).encode())
        tokens = 0
        boundaries: list[_Boundary] = []
        breakpoints: list[int] = []  # indexes into boundaries
        for block, marked, framing in iter_blocks(body):
            encoded = _ENCODE(_strip(block))
            h.update(encoded)
            tokens += len(encoded) // 4 + framing
            boundaries.append(_Boundary(h.copy().digest(), tokens))
            if marked:
                breakpoints.append(len(boundaries) - 1)
        read = 0
        read_digest: bytes | None = None
        for bp in breakpoints:
            for i in range(bp, max(-1, bp - self.lookback - 1), -1):
                b = boundaries[i]
                if b.tokens > read and self._live(b.digest, now):
                    read, read_digest = b.tokens, b.digest
                    break
        written = read
        for bp in breakpoints:
            b = boundaries[bp]
            if b.tokens >= self.min_tokens:
                if not self._live(b.digest, now):
                    written = max(written, b.tokens)
                self._written[b.digest] = now + self.ttl_s
        if read_digest is not None:
            self._written[read_digest] = now + self.ttl_s
        if len(self._written) > 100_000:
            self._written = {d: e for d, e in self._written.items() if e > now}
        return Usage(
            input_tokens=tokens - written,
            cache_creation_input_tokens=written - read,
            cache_read_input_tokens=read,
        )
