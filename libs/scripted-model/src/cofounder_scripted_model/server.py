"""The HTTP server: ``POST /v1/messages`` (streaming SSE or not),
``POST /v1/messages/count_tokens``, and a control surface for tests (``/_control/...``).

Faults are queued and consumed one per ``/v1/messages`` request, in order:

- ``{"status": 429, "retry_after": 1}``: a rate limit with ``retry-after`` seconds;
- ``{"status": 529}`` (overloaded), ``{"status": 500}``, or ``{"status": 400, "message": "..."}``;
- ``{"cut_after_blocks": 1}``: a stream that ends without ``message_stop`` after that many blocks;
  with ``"stream_error": "overloaded_error"`` it sends the API's mid-stream ``error`` event there
  (non-streaming requests get a dropped connection);
- each with ``"times": n`` (default 1) and optionally ``"model": "..."`` to hit only that model.

Every request is logged (``GET /_control/log``): its model, the transcript position it asked for,
whether it was served, when it arrived (``received_at``, Unix seconds), and ``metadata.user_id``,
which the agent sets to the build id; that is how a test proves no completed iteration was asked
for twice.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cofounder_scripted_model.caching import PromptCache, Usage, estimate_tokens
from cofounder_scripted_model.transcript import Transcript
from cofounder_scripted_model.validation import validate

__all__ = ["Fault", "ModelServer", "create_app"]

_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE: Final = msgspec.json.Decoder().decode
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_FINAL_TEXT: Final = "The transcript is over: there is nothing more to do."


class Fault(msgspec.Struct, kw_only=True):
    status: int | None = None
    retry_after: float | None = None
    message: str | None = None
    cut_after_blocks: int | None = None
    stream_error: str | None = None  # with cut_after_blocks: an ``error`` event there instead
    times: int = 1
    model: str | None = None


@dataclass(slots=True)
class ModelServer:
    """The server's state: one transcript, the prompt cache, queued faults and the request log."""

    transcript: Transcript
    latency_s: float = 0.0
    delta_chars: int = 0  # > 0: a block's text and tool input stream in deltas of this size
    cache: PromptCache = field(default_factory=PromptCache)
    faults: list[Fault] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def take_fault(self, model: str) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.model is None or fault.model == model:
                fault.times -= 1
                if fault.times <= 0:
                    del self.faults[i]
                return fault
        return None

    def request_id(self) -> str:
        return f"req_scripted_{next(self._ids):06d}_{secrets.token_hex(4)}"


def _error(
    status: int, message: str, request_id: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }
    return Response(
        _ENCODE(body),
        status_code=status,
        media_type="application/json",
        headers={"request-id": request_id, **(headers or {})},
    )


def _usage_dict(usage: Usage, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": output_tokens,
    }


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _ENCODE(data) + b"\n\n"


def _pieces(text: str, size: int) -> list[str]:
    """``text`` in deltas of ``size`` characters, as the API streams a few tokens at a time
    (``size`` 0: all at once)."""
    if size <= 0 or len(text) <= size:
        return [text]
    return [text[i : i + size] for i in range(0, len(text), size)]


async def _stream(
    message: dict[str, Any],
    usage: Usage,
    output_tokens: int,
    cut_after: int | None,
    error: str | None = None,
    delta_chars: int = 0,
) -> AsyncIterator[bytes]:
    start = dict(message, content=[], stop_reason=None, usage=_usage_dict(usage, 1))
    yield _sse("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        if cut_after is not None and index >= cut_after:
            if error is not None:  # the API's way: an error event, then the stream ends
                body = {"type": "error", "error": {"type": error, "message": "Overloaded"}}
                yield _sse("error", body)
                return
            raise ConnectionAbortedError("scripted fault: stream cut short")
        if block["type"] == "text":
            yield _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            for piece in _pieces(block["text"], delta_chars):
                yield _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        else:
            head = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            yield _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": head},
            )
            for piece in _pieces(_ENCODE(block["input"]).decode(), delta_chars):
                yield _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        await asyncio.sleep(0)
    if cut_after is not None:
        raise ConnectionAbortedError("scripted fault: stream cut short")
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


async def _messages(state: ModelServer, request: Request) -> Response:
    """``POST /v1/messages``: validate, apply a queued fault, reply from the transcript."""
    request_id = state.request_id()
    try:
        body = _DECODE(await request.body())
    except msgspec.DecodeError as exc:
        return _error(400, f"There was an issue with your request body: {exc}", request_id)
    problem = validate(body)
    model = str(body.get("model", "")) if isinstance(body, Mapping) else ""
    user = (body.get("metadata") or {}).get("user_id") if isinstance(body, Mapping) else None
    entry: dict[str, Any] = {
        "request_id": request_id,
        "model": model,
        "build": user,
        "received_at": time.time(),
    }
    state.log.append(entry)
    if problem:
        entry.update(status=400, error=problem)
        return _error(400, problem, request_id)
    position = state.transcript.position(body["messages"])
    entry.update(turn=position.turn, recovery=position.recovery, stream=bool(body.get("stream")))
    if state.latency_s:
        await asyncio.sleep(state.latency_s)
    fault = state.take_fault(model)
    if fault is not None and fault.status is not None:
        entry.update(status=fault.status)
        headers = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.status == 429:
            headers["x-should-retry"] = "true"
        text = fault.message or {
            429: "Number of request tokens has exceeded your per-minute rate limit",
            529: "Overloaded",
        }.get(fault.status, "Internal server error")
        return _error(fault.status, text, request_id, headers)
    content = state.transcript.reply(position)
    if content is None:
        content = [{"type": "text", "text": _FINAL_TEXT}]
        stop_reason = "end_turn"
    else:
        stop_reason = "tool_use"
    usage = state.cache.usage(body)
    output_tokens = max(1, len(_ENCODE(content)) // 4)
    message = {
        "id": f"msg_{request_id[4:]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage_dict(usage, output_tokens),
    }
    cut = fault.cut_after_blocks if fault is not None else None
    entry.update(status=200, cut=cut is not None, usage=message["usage"])
    if body.get("stream"):
        return StreamingResponse(
            _stream(
                message,
                usage,
                output_tokens,
                cut,
                fault.stream_error if fault else None,
                state.delta_chars,
            ),
            media_type="text/event-stream",
            headers={"request-id": request_id, "cache-control": "no-cache"},
        )
    if cut is not None:
        raise ConnectionAbortedError("scripted fault: response cut short")
    return Response(
        _ENCODE(message), media_type="application/json", headers={"request-id": request_id}
    )


def create_app(state: ModelServer) -> Starlette:
    """The Starlette application serving ``state``."""

    async def count_tokens(request: Request) -> Response:
        request_id = state.request_id()
        try:
            body = _DECODE(await request.body())
        except msgspec.DecodeError as exc:
            return _error(400, f"There was an issue with your request body: {exc}", request_id)
        if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
            return _error(400, "messages: Field required", request_id)
        return JSONResponse(
            {"input_tokens": estimate_tokens(body)}, headers={"request-id": request_id}
        )

    async def add_faults(request: Request) -> Response:
        faults = msgspec.json.decode(await request.body(), type=list[Fault])
        state.faults.extend(faults)
        return JSONResponse({"queued": len(state.faults)})

    async def settings(request: Request) -> Response:
        body = _DECODE(await request.body())
        if "latency_ms" in body:
            state.latency_s = float(body["latency_ms"]) / 1000
        return JSONResponse({"latency_ms": state.latency_s * 1000})

    async def get_log(request: Request) -> Response:
        return Response(_ENCODE(state.log), media_type="application/json")

    async def reset(request: Request) -> Response:
        state.faults.clear()
        state.log.clear()
        state.cache = PromptCache(
            min_tokens=state.cache.min_tokens,
            ttl_s=state.cache.ttl_s,
            lookback=state.cache.lookback,
        )
        return JSONResponse({"reset": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "transcript": state.transcript.name})

    return Starlette(
        routes=[
            Route("/v1/messages", functools.partial(_messages, state), methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/_control/faults", add_faults, methods=["POST"]),
            Route("/_control/settings", settings, methods=["POST"]),
            Route("/_control/log", get_log, methods=["GET"]),
            Route("/_control/reset", reset, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
