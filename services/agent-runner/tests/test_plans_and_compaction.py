"""Pure parts of the runner: the tier -> model map, settings checks, compaction, prompts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from cofounder_agent_runner.compaction import compact
from cofounder_agent_runner.plans import BuildBlocked, UnknownTier, resolve_model
from cofounder_agent_runner.prompt import (
    CACHED_TOOLS,
    request_messages,
    sandbox_replaced,
    system_prompt,
)
from cofounder_agent_runner.settings import DEFAULT_MODELS, RunnerSettings
from cofounder_agent_runner.testing import context_ready
from cofounder_snapshots.manifest import FileMeta, Manifest

MODELS = {"bootstrapper": {"coder": "m-small"}, "pro": {"coder": "m-large", "reviewer": "m-mid"}}


def test_the_tier_picks_the_model_for_the_role() -> None:
    assert resolve_model(MODELS, tier="bootstrapper") == "m-small"
    assert resolve_model(MODELS, tier="pro") == "m-large"
    assert resolve_model(MODELS, tier="pro", role="reviewer") == "m-mid"
    with pytest.raises(UnknownTier, match="tier 'enterprise'"):
        resolve_model(MODELS, tier="enterprise")
    with pytest.raises(BuildBlocked, match=r"^Build blocked: chargeback$"):
        resolve_model(MODELS, tier="pro", suspended=True, suspension_reason="chargeback")
    with pytest.raises(BuildBlocked, match="Build blocked: the account is suspended"):
        resolve_model(MODELS, tier="pro", suspended=True)


def test_a_key_never_goes_to_the_scripted_model_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """compose sets SCRIPTED_MODEL_URL for keyless runs; a key must then go to Anthropic (or to
    the server ANTHROPIC_BASE_URL names), never to the scripted model."""
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setenv("SCRIPTED_MODEL_URL", "http://scripted:8100")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")  # compose's ${ANTHROPIC_API_KEY:-}
    assert RunnerSettings(environment="development").model_base_url == "http://scripted:8100"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-real")
    assert RunnerSettings(environment="development").model_base_url is None  # Anthropic's
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://proxy.example")
    assert RunnerSettings(environment="development").model_base_url == "https://proxy.example"
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    monkeypatch.delenv("SCRIPTED_MODEL_URL")
    with pytest.raises(ValidationError, match="ANTHROPIC_API_KEY is not set"):
        RunnerSettings(environment="development")


def test_settings_defaults_and_the_lease_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_MAP", '{"bootstrapper": {"coder": "m-env"}}')
    monkeypatch.setenv("SCRIPTED_MODEL_URL", "http://scripted:8100")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    settings = RunnerSettings(environment="development")
    assert settings.model_map == {"bootstrapper": {"coder": "m-env"}}
    assert settings.max_tool_calls_for("bootstrapper") == 150
    assert settings.max_tool_calls_for("unheard-of") == 150
    assert set(DEFAULT_MODELS) == {"bootstrapper", "founder", "pro"}
    assert settings.sandbox_kind == "local"
    monkeypatch.setenv("E2B_API_KEY", "e2b_x")
    assert RunnerSettings(environment="development").sandbox_kind == "e2b"
    with pytest.raises(ValidationError, match="LEASE_TTL_MS must be below"):
        RunnerSettings(environment="development", lease_ttl_ms=30_000, consumer_min_idle_ms=30_000)


def _conversation(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "build"}]}
    ]
    for n in range(turns):
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": f"step {n}"},
                    {
                        "type": "tool_use",
                        "id": f"t{n}",
                        "name": "bash",
                        "input": {"command": f"echo {n}"},
                    },
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": f"out {n}"}],
            }
        )
    return messages


def test_compaction_keeps_the_first_and_recent_turns_and_summarises_the_middle() -> None:
    assert compact(_conversation(3)) is None
    messages = _conversation(10)
    compacted = compact(messages)
    assert compacted is not None
    assert compacted[1:] == messages[-8:]  # the last four turns, verbatim
    first = compacted[0]
    assert first["role"] == "user"
    assert first["content"][0] == messages[0]["content"][0]
    summary = first["content"][1]["text"]
    assert "called bash" in summary
    assert "echo 0" in summary
    assert "out 5" in summary
    assert "echo 6" not in summary  # kept verbatim, not summarised
    assert compacted[1]["role"] == "assistant"  # every tool_use still answered next


def test_prompts_carry_the_context_and_at_most_four_breakpoints() -> None:
    context = context_ready()
    prompt = system_prompt(context)
    assert "Plantr" in prompt
    assert "Busy plant owners" in prompt
    assert context.goal in prompt
    messages = request_messages(_conversation(2))
    marked = [b for m in messages for b in m["content"] if "cache_control" in b]
    assert len(marked) == 1
    assert messages[-1]["content"][-1] is marked[0]
    assert "cache_control" not in _conversation(2)[-1]["content"][-1]  # stored turns stay clean
    assert [t for t in CACHED_TOOLS if "cache_control" in t] == [CACHED_TOOLS[-1]]


def test_a_replaced_sandbox_is_told_to_the_model_with_what_it_holds() -> None:
    """The three things a new sandbox can hold after a lost one: the latest snapshot (named, in
    UTC), nothing because none was taken, nothing because the restore failed. Each says that
    what lay outside the project folder is gone, as a user turn of text."""
    paris = timezone(timedelta(hours=1))
    manifest = Manifest(
        project_id="p",
        build_id="b",
        version=3,
        created_at=datetime(2026, 11, 30, 13, 5, tzinfo=paris),
        files={"app.py": FileMeta("0" * 64, 10, 0o644), "README.md": FileMeta("1" * 64, 5, 0o644)},
    )
    texts = []
    for note in (
        sandbox_replaced(manifest),
        sandbox_replaced(None),
        sandbox_replaced(None, restore_failed=True),
    ):
        assert note["role"] == "user"
        [block] = note["content"]
        assert block["type"] == "text"
        assert block["text"].startswith("Your sandbox was lost")
        assert "installed packages, running servers" in block["text"]
        texts.append(block["text"])
    restored, none_taken, failed = texts
    assert "version 3, taken 2026-11-30 12:05 UTC, 2 files" in restored
    assert "what you changed after it was taken is gone" in restored
    assert "is empty: no snapshot of your files had been taken" in none_taken
    assert "is empty: the latest snapshot of your files could not be restored" in failed
