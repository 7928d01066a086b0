"""Pure parts of the runtime: option validation, backoff, reply parsing. No network."""

from __future__ import annotations

import pytest

from cofounder_runtime.keys import dlq_key, once_key
from cofounder_runtime.options import ConsumerOptions
from cofounder_runtime.settings import RuntimeSettings
from cofounder_runtime.streamreply import as_bytes, id_tuple, read_entries


def test_defaults_follow_the_architecture() -> None:
    options = ConsumerOptions()
    assert options.max_deliveries == 5
    assert options.heartbeat_every_ms == options.min_idle_ms // 3
    assert options.janitor_every_ms == options.min_idle_ms // 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"max_deliveries": 0}, "max_deliveries must be at least 1"),
        ({"retry_max_ms": 40_000}, "retry_max_ms must be below min_idle_ms"),
        ({"heartbeat_ms": 30_000}, "heartbeat_ms must be between 0 and min_idle_ms"),
        ({"block_ms": 0}, "block_ms must be at least 1"),
    ],
)
def test_invalid_options_are_refused_with_the_reason(changes: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConsumerOptions(**changes)


def test_backoff_doubles_and_is_capped() -> None:
    options = ConsumerOptions(retry_base_ms=100, retry_max_ms=1_000)
    assert [options.backoff_ms(d) for d in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]


def test_settings_map_to_consumer_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUMER_MAX_DELIVERIES", "9")
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    settings = RuntimeSettings(environment="development")
    assert settings.redis_url.get_secret_value() == "redis://example:6380/2"
    assert settings.consumer_options(max_age_ms=5).max_deliveries == 9
    assert settings.consumer_options(max_age_ms=5).max_age_ms == 5
    # Every CONSUMER_<OPTION> setting but the consumer's name reaches the option of that name.
    options = settings.consumer_options()
    for name in RuntimeSettings.model_fields:
        if name.startswith("consumer_") and name != "consumer_name":
            assert getattr(options, name.removeprefix("consumer_")) == getattr(settings, name)


def test_read_entries_handles_both_protocols_and_timeouts() -> None:
    entries = [(b"1-0", {b"a": b"1"}), (b"2-0", None)]
    assert read_entries(None) == []
    assert read_entries([[b"s", entries]]) == entries
    assert read_entries({b"s": [entries]}) == entries


def test_ids_and_keys() -> None:
    assert id_tuple(b"17-3") < id_tuple("17-10") < id_tuple("18")
    assert as_bytes("x") == b"x"
    with pytest.raises(TypeError):
        as_bytes(3)
    assert dlq_key("cofounder.builds.requested") == "cofounder.builds.requested.dlq"
    assert once_key("budget", "e1") == "cofounder.once:{budget}:e1"
