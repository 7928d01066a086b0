"""A pure-ASGI guard on request body size: 413 before the app reads an oversized body."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cofounder_gateway.problems import problem

__all__ = ["BodyLimit"]


class _TooLarge(HTTPException):
    """Raised by the body's ``receive`` once it has passed the limit. An HTTPException, because
    FastAPI turns any other error raised while it reads a body into a 400 ("error parsing the
    body"): this one it lets through, to the problem handler (413 ``payload_too_large``)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large_detail(max_bytes))


def too_large_detail(max_bytes: int) -> str:
    return f"request bodies are limited to {max_bytes} bytes"


class BodyLimit:
    """Refuse bodies over ``max_bytes`` (by ``Content-Length``, or while streaming)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "payload_too_large", too_large_detail(self.max_bytes))
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)
