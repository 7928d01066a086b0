"""Model calls through the official SDK (``AsyncAnthropic``, streaming), with our own retries.

The SDK's retries are off (``max_retries=0``) because the loop needs what they hide: the usage of
every attempt (a stream cut short has still consumed input tokens), the count of consecutive
overloaded answers (after ``overloaded_before_fallback`` of them the fallback model is used), and
one place that decides what is fatal.

- 429: wait ``retry-after`` (or the backoff), try again;
- 529 (overloaded): back off; after N in a row, switch to the fallback model for this call;
- 5xx, connection errors, timeouts, a stream cut short: back off, try again;
- any other 4xx (400 invalid request, 401, 403, 404, 413): :class:`ModelRejected`, the build
  fails with the API's message;
- attempts exhausted: :class:`ModelUnavailable`; the loop catches it beside the call and hands
  the build back (``HandedBack``, its entry stays pending), and a later attempt resumes it from
  its checkpoint.

With tracing on, each call (its attempts included) is a CLIENT span ``chat <model>`` with the
GenAI semantic conventions' attributes: the models asked for and answering, the token counts
(``gen_ai.usage.input_tokens`` counts the whole prompt, cached parts included; the cache's
reads and writes are apart), the finish reason and the attempts. Never the prompt, the tools'
inputs or the reply.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import structlog

from cofounder_agent_runner.metrics import MODEL_CALL_SECONDS, MODEL_RETRIES
from cofounder_contracts.events import UsageOutcome
from cofounder_runtime import tracing

__all__ = ["ModelClient", "ModelRejected", "ModelReply", "ModelUnavailable", "TokenUsage"]

_log = structlog.get_logger("cofounder.runner.model")
_RETRY_AFTER_CAP_S = 300.0


class ModelRejected(Exception):
    """The API refused the request for good (a 4xx other than 429); ``str()`` is its reason."""


class ModelUnavailable(Exception):
    """The API kept failing; try the build again later."""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Everything the prompt held (what compaction compares with the context window)."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    @classmethod
    def of(cls, usage: Any) -> TokenUsage:
        if usage is None:
            return cls()
        return cls(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_creation_input_tokens=getattr(usage, "cache_creation_input_tokens", 0) or 0,
            cache_read_input_tokens=getattr(usage, "cache_read_input_tokens", 0) or 0,
        )


@dataclass(frozen=True, slots=True)
class ModelReply:
    """One completed response: the assistant message as an API param, and its metering."""

    message: dict[str, Any]
    stop_reason: str | None
    model: str
    usage: TokenUsage
    request_id: str | None
    attempts: int = 1  # this one included


#: Called with (model, usage, request id, outcome) for every attempt that consumed tokens.
UsageSink = Callable[[str, TokenUsage, str | None, UsageOutcome], Awaitable[None]]


def _block_param(block: Any) -> dict[str, Any]:
    kind = block.type
    if kind == "text":
        return {"type": "text", "text": block.text}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if kind == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    dumped: dict[str, Any] = block.model_dump(exclude_none=True)
    return dumped


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    raw = exc.response.headers.get("retry-after")
    try:
        return min(float(raw), _RETRY_AFTER_CAP_S) if raw is not None else None
    except ValueError:
        return None


class ModelClient:
    """Streams completions; see the module docstring for the retry rules."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        *,
        fallback_model: str,
        overloaded_before_fallback: int = 3,
        attempts: int = 8,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.client = client
        self.fallback_model = fallback_model
        self.overloaded_before_fallback = overloaded_before_fallback
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def complete(
        self,
        *,
        model: str,
        system: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        messages: Sequence[dict[str, Any]],
        max_tokens: int,
        build_id: str,
        on_usage: UsageSink,
    ) -> ModelReply:
        """One model call, retried by the rules above, in its span (tracing on)."""
        with tracing.span(
            f"chat {model}",
            kind=tracing.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.system": "anthropic",
                "gen_ai.request.model": model,
                "gen_ai.request.max_tokens": max_tokens,
                "cofounder.build_id": build_id,
            },
        ) as span:
            try:
                request = {
                    "max_tokens": max_tokens,
                    "system": system,
                    "tools": tools,
                    "messages": messages,
                    "metadata": {"user_id": build_id},
                }
                reply = await self._complete(model, request, on_usage)
            except ModelUnavailable:
                span.set_attribute("cofounder.model.attempts", self.attempts)
                raise
            if span.is_recording():
                span.set_attributes(_reply_attributes(reply, requested=model))
            return reply

    async def _complete(
        self, model: str, request: dict[str, Any], on_usage: UsageSink
    ) -> ModelReply:
        """The attempts of one call: ``request`` is what the API is sent besides the model."""
        overloaded = 0
        current = model
        began = time.perf_counter()
        last_error = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            if overloaded >= self.overloaded_before_fallback and current != self.fallback_model:
                MODEL_RETRIES.labels("fallback").inc()
                _log.warning(
                    "model overloaded; using the fallback",
                    model=current,
                    fallback=self.fallback_model,
                )
                current = self.fallback_model
            stream = None
            try:
                async with self.client.messages.stream(model=current, **request) as stream:
                    final = await stream.get_final_message()
                usage = TokenUsage.of(final.usage)
                request_id = stream.request_id
                MODEL_CALL_SECONDS.labels(current).observe(time.perf_counter() - began)
                await on_usage(current, usage, request_id, UsageOutcome.OK)
                return ModelReply(
                    message={
                        "role": "assistant",
                        "content": [_block_param(b) for b in final.content],
                    },
                    stop_reason=final.stop_reason,
                    model=current,
                    usage=usage,
                    request_id=request_id,
                    attempts=attempt,
                )
            except anthropic.APIStatusError as exc:
                status = _status(exc)
                last_error = f"{status}: {exc.message}"
                snapshot = _snapshot(stream)
                if snapshot is not None:  # an error event mid-stream: its input was consumed
                    await on_usage(
                        current,
                        TokenUsage.of(snapshot.usage),
                        _request_id(stream),
                        UsageOutcome.ERROR,
                    )
                if status == 429:
                    MODEL_RETRIES.labels("rate_limited").inc()
                    wait = _retry_after(exc)
                    delay = wait if wait is not None else self._backoff(attempt)
                    _log.warning("rate limited; waiting", seconds=delay, model=current)
                    await asyncio.sleep(delay)
                    continue
                if status == 529 or isinstance(exc, anthropic.OverloadedError):
                    MODEL_RETRIES.labels("overloaded").inc()
                    overloaded += 1
                    await asyncio.sleep(_retry_after(exc) or self._backoff(attempt))
                    continue
                if status >= 500 or status in (408, 409):
                    MODEL_RETRIES.labels("server_error").inc()
                    await asyncio.sleep(_retry_after(exc) or self._backoff(attempt))
                    continue
                raise ModelRejected(
                    f"the model API refused the request ({status}): {_message(exc)}"
                ) from exc
            except (anthropic.APIError, httpx2.HTTPError, OSError, ValueError) as exc:
                # Connection trouble or a stream cut short: what arrived still cost tokens.
                last_error = f"{type(exc).__name__}: {exc}"
                snapshot = _snapshot(stream)
                if snapshot is not None:
                    await on_usage(
                        current,
                        TokenUsage.of(snapshot.usage),
                        _request_id(stream),
                        UsageOutcome.CUT_SHORT,
                    )
                MODEL_RETRIES.labels("broken_stream").inc()
                _log.warning("model call broke off; retrying", error=last_error, attempt=attempt)
                await asyncio.sleep(self._backoff(attempt))
        raise ModelUnavailable(
            f"the model API kept failing ({self.attempts} attempts): {last_error}"
        )


def _reply_attributes(reply: ModelReply, *, requested: str) -> dict[str, Any]:
    """A completed call's span attributes: who answered, what it cost, how it ended."""
    usage = reply.usage
    return {
        "gen_ai.response.model": reply.model,
        "gen_ai.response.finish_reasons": [reply.stop_reason or ""],
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_input_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_creation_input_tokens,
        "cofounder.model.request_id": reply.request_id or "",
        "cofounder.model.attempts": reply.attempts,
        "cofounder.model.fallback": reply.model != requested,
    }


#: A mid-stream ``error`` event arrives on a 200 response: its type says what it is.
_STREAM_ERRORS = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "invalid_request_error": 400,
}


def _status(exc: anthropic.APIStatusError) -> int:
    if exc.status_code >= 400:
        return exc.status_code
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return _STREAM_ERRORS.get(str(kind), 500)


def _snapshot(stream: Any) -> Any:
    """The partial message of a broken stream (its ``message_start`` usage), if any arrived."""
    if stream is None:
        return None
    try:
        return stream.current_message_snapshot
    except (AssertionError, AttributeError, RuntimeError):
        return None


def _request_id(stream: Any) -> str | None:
    try:
        rid = stream.request_id
    except (AttributeError, RuntimeError):
        return None
    return rid if isinstance(rid, str) else None


def _message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return exc.message
