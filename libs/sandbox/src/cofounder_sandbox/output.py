"""A command's output, bounded: the head and the tail of it, and how much was dropped between.

Both kinds of sandbox gather a command's output in the runner; a command that prints for its
whole timeout (``yes``) must cost the runner a megabyte, not gigabytes.
"""

from __future__ import annotations

from typing import Final

__all__ = ["KEEP_BYTES", "BoundedOutput"]

#: Bytes of the head, and of the tail, kept of a command's output.
KEEP_BYTES: Final = 512 * 1024


class BoundedOutput:
    """A command's output, keeping the head and the tail when it is huge."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.closed = False  # after the command's result is taken: later output is dropped

    def add(self, data: bytes) -> None:
        if self.closed:
            return
        room = KEEP_BYTES - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > KEEP_BYTES:
                cut = len(self.tail) - KEEP_BYTES
                self.dropped += cut
                del self.tail[:cut]

    def add_text(self, text: str) -> None:
        """``add`` for a client that hands over decoded text (E2B's SDK)."""
        self.add(text.encode())

    def text(self) -> str:
        middle = f"\n[... {self.dropped} bytes of output dropped ...]\n" if self.dropped else ""
        return self.head.decode(errors="replace") + middle + self.tail.decode(errors="replace")
