"""The scripted model server: transcript positions, cache accounting, validation, and the real
``anthropic`` SDK talking to it over HTTP (streaming and not, errors, count_tokens)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from cofounder_scripted_model.caching import PromptCache
from cofounder_scripted_model.process import ScriptedModel, start
from cofounder_scripted_model.transcript import Position, TranscriptError, load_builtin, parse
from cofounder_scripted_model.validation import validate

SCRIPT = parse(
    {
        "turns": [
            {"text": "first", "tools": [{"name": "bash", "input": {"command": "make"}}]},
            {
                "tools": [{"name": "bash", "input": {"command": "make test"}}],
                "on_error": {
                    "text": "retry",
                    "tools": [{"name": "bash", "input": {"command": "make clean"}}],
                },
            },
            {"tools": [{"name": "finish", "input": {"summary": "done"}}]},
        ]
    }
)


def _result(tool_id: str, *, error: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id, "content": "x"}
    if error:
        block["is_error"] = True
    return {"role": "user", "content": [block]}


def _assistant(position: Position) -> dict[str, Any]:
    content = SCRIPT.reply(position)
    assert content is not None
    return {"role": "assistant", "content": content}


def test_positions_follow_the_conversation_and_recover_once_from_an_error() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    assert SCRIPT.position(messages) == Position(0, recovery=False)
    messages += [_assistant(Position(0, recovery=False)), _result("toolu_s0000_0", error=True)]
    # Turn 1 has an on_error branch and the previous results failed: the recovery is served.
    assert SCRIPT.position(messages) == Position(1, recovery=True)
    messages += [_assistant(Position(1, recovery=True)), _result("toolu_r0001_0")]
    assert SCRIPT.position(messages) == Position(1, recovery=False)
    messages += [_assistant(Position(1, recovery=False)), _result("toolu_s0001_0")]
    assert SCRIPT.position(messages) == Position(2, recovery=False)
    messages += [_assistant(Position(2, recovery=False)), _result("toolu_s0002_0")]
    assert SCRIPT.reply(SCRIPT.position(messages)) is None  # past the end: text only
    # Compaction keeps the last assistant turn, and that is all the position needs.
    assert SCRIPT.position([messages[0], *messages[-4:]]) == Position(3, recovery=False)


def test_bad_transcripts_name_the_place() -> None:
    with pytest.raises(TranscriptError, match=r"turns\[0\]: every scripted turn calls"):
        parse({"turns": [{"text": "only words"}]})
    with pytest.raises(TranscriptError, match=r"turns\[0\].tools\[0\]"):
        parse({"turns": [{"tools": [{"input": {}}]}]})
    with pytest.raises(TranscriptError, match="no built-in transcript"):
        load_builtin("nope")
    assert len(load_builtin("demo-webapp").turns) >= 6


def _body(messages: list[dict[str, Any]], *, big: int = 6000) -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 10,
        "tools": [
            {
                "name": "t",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "system": [{"type": "text", "text": "s" * big, "cache_control": {"type": "ephemeral"}}],
        "messages": messages,
    }


def _rolling(n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i in range(n):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": [{"type": "text", "text": f"turn {i} " * 50}]})
    messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return messages


def test_cache_writes_then_reads_the_rolling_prefix() -> None:
    cache = PromptCache()
    first = cache.usage(_body(_rolling(1)), now=0)
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation_input_tokens > 1500  # the system prompt and the first turn
    assert first.input_tokens == 0
    second = cache.usage(_body(_rolling(3)), now=1)
    # Everything the first request wrote is read; only the two new turns are written.
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert 0 < second.cache_creation_input_tokens < first.cache_creation_input_tokens
    # Another model shares nothing; an expired entry is not read.
    other = cache.usage({**_body(_rolling(3)), "model": "other"}, now=2)
    assert other.cache_read_input_tokens == 0
    late = cache.usage(_body(_rolling(5)), now=10_000)
    assert late.cache_read_input_tokens == 0
    # Below the minimum nothing is cached.
    small = PromptCache().usage(_body(_rolling(1), big=10), now=0)
    assert small.cache_creation_input_tokens == 0
    assert small.input_tokens > 0


def test_validation_speaks_like_the_api() -> None:
    good = _body(_rolling(1))
    assert validate(good) is None
    assert validate({**good, "max_tokens": None}) == "max_tokens: Field required"
    dangling = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}],
        },
        {"role": "user", "content": [{"type": "text", "text": "no result"}]},
    ]
    message = validate({**good, "messages": dangling})
    assert message is not None
    assert "`tool_use` ids were found without `tool_result`" in message
    stray = [
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}],
        }
    ]
    message = validate({**good, "messages": stray})
    assert message is not None
    assert "unexpected `tool_use_id`" in message
    marked = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}] * 3,
        }
    ]
    assert "maximum of 4 blocks with cache_control" in str(validate({**good, "messages": marked}))
    assert "does not match any" in str(
        validate({**good, "tools": [{"type": "bash_1999", "name": "bash"}]})
    )
    assert (
        validate({**good, "tools": [{"type": "bash_20250124", "name": "shell"}]})
        == "tools.0.name: Input should be 'bash'"
    )


#: The smallest PNG there is (1x1, one grey pixel), as the screenshot tool would send one.
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
        "3a7e9b550000000a49444154789c63600000000200013fd3ff370000000049454e44ae426082"
    )
).decode()


def _shot(image: dict[str, Any]) -> list[Any]:
    """A conversation whose tool result carries ``image`` (the screenshot tool's shape)."""
    return [
        {"role": "user", "content": "build"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_s", "name": "screenshot", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_s",
                    "content": [image, {"type": "text", "text": "Screenshot of the preview"}],
                }
            ],
        },
    ]


def _png_block(**source: Any) -> dict[str, Any]:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG_1X1, **source},
    }


def test_an_image_in_a_tool_result_must_be_a_well_formed_png_block() -> None:
    good = _body(_rolling(1))
    assert validate({**good, "messages": _shot(_png_block())}) is None
    where = "messages.2.content.0.content.0"
    refused = {
        "no source": ({"type": "image"}, f"{where}.source: Field required"),
        "not base64": (_png_block(type="text"), f"{where}.source.type: Input should be"),
        "no media type": (_png_block(media_type=None), f"{where}.source.base64.media_type"),
        "svg": (_png_block(media_type="image/svg+xml"), f"{where}.source.base64.media_type"),
        "empty": (_png_block(data=""), f"{where}.source.base64.data: Field required"),
        "bad base64": (_png_block(data="not base64!"), "not valid base64"),
        "not a png": (
            _png_block(data=base64.b64encode(b"<html>hi</html>").decode()),
            "Could not process image: it is not a image/png",
        ),
        "jpeg said png": (
            _png_block(data=base64.b64encode(b"\xff\xd8\xff\xe0rest").decode()),
            "Could not process image",
        ),
    }
    for case, (image, expected) in refused.items():
        message = validate({**good, "messages": _shot(image)})
        assert message is not None, case
        assert message.startswith(expected) or expected in message, (case, message)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModel]:
    with start("demo-webapp") as running:
        yield running


@pytest.fixture
def client(server: ScriptedModel) -> Iterator[anthropic.Anthropic]:
    server.reset()
    with anthropic.Anthropic(api_key="test", base_url=server.url, max_retries=0) as sdk:
        yield sdk


TOOLS: list[Any] = [{"type": "bash_20250124", "name": "bash"}]


@pytest.mark.integration
def test_the_sdk_streams_and_reads_a_scripted_turn(
    client: anthropic.Anthropic, server: ScriptedModel
) -> None:
    with client.messages.stream(
        model="claude-x",
        max_tokens=100,
        tools=TOOLS,
        messages=[{"role": "user", "content": "build"}],
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    use = next(b for b in message.content if b.type == "tool_use")
    assert use.id == "toolu_s0000_0"
    assert use.name == "str_replace_based_edit_tool"
    assert use.input["command"] == "create"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    plain = client.messages.create(
        model="claude-x",
        max_tokens=100,
        tools=TOOLS,
        messages=[{"role": "user", "content": "build"}],
    )
    assert [b.type for b in plain.content] == [b.type for b in message.content]
    counted = client.messages.count_tokens(
        model="claude-x", messages=[{"role": "user", "content": "hello " * 100}]
    )
    assert counted.input_tokens > 100
    log = server.log()
    assert [(e["turn"], e["status"], e["stream"]) for e in log] == [(0, 200, True), (0, 200, False)]


@pytest.mark.integration
def test_a_broken_request_gets_the_api_error_shape(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-x",
            max_tokens=100,
            messages=[
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_x", "name": "bash", "input": {}}],
                },
                {"role": "user", "content": "forgot the result"},
            ],
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "toolu_x" in body["error"]["message"]
    assert caught.value.request_id is not None


@pytest.mark.integration
def test_a_malformed_image_in_a_tool_result_is_refused_with_400(
    client: anthropic.Anthropic,
) -> None:
    """Over HTTP, through the SDK: the real API's answer to a screenshot that is not a PNG."""
    html = base64.b64encode(b"<!doctype html>").decode()
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-x", max_tokens=100, messages=_shot(_png_block(data=html))
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "invalid_request_error"
    assert "Could not process image" in body["error"]["message"]
    accepted = client.messages.create(
        model="claude-x", max_tokens=100, messages=_shot(_png_block())
    )
    assert accepted.content


@pytest.mark.integration
def test_faults_rate_limit_overload_and_a_cut_stream(
    client: anthropic.Anthropic, server: ScriptedModel
) -> None:
    server.faults({"status": 429, "retry_after": 7}, {"status": 529}, {"cut_after_blocks": 1})
    request: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "go"}],
    }
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(**request)
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(**request)
    assert overloaded.value.status_code == 529
    # The SDK does not wrap a body cut mid-stream: it surfaces httpx2's protocol error.
    with (
        pytest.raises((anthropic.APIError, httpx2.HTTPError)),
        client.messages.stream(**request) as stream,
    ):
        stream.get_final_message()
    assert client.messages.create(**request).stop_reason == "tool_use"  # faults used up
    assert [e["status"] for e in server.log()] == [429, 529, 200, 200]


def test_a_server_that_exits_before_announcing_itself_is_an_error_naming_its_exit_code() -> None:
    failed = pytest.raises(RuntimeError, match=r"did not start \(its output ended; exit code 2\)")
    with failed, start(extra=["--latency-ms", "not-a-number"]):
        pass


def test_a_server_silent_past_the_deadline_is_an_error_not_a_hang() -> None:
    failed = pytest.raises(RuntimeError, match=r"said nothing in 0.001 s; still running")
    with failed, start(startup_timeout_s=0.001):
        pass
