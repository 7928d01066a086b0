"""The agent runner's settings (environment variables, read when constructed)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from cofounder_budgeting.settings import PlanSettings
from cofounder_db.settings import DatabaseSettings
from cofounder_domain.plans import DEFAULT_PLANS
from cofounder_runtime.settings import RuntimeSettings
from cofounder_snapshots.config import SnapshotStoreSettings
from cofounder_snapshots.screenshots import ScreenshotSettings

__all__ = ["DEFAULT_MODELS", "RunnerSettings"]

#: Tier -> role -> model of the default plans.
DEFAULT_MODELS: dict[str, dict[str, str]] = {t: dict(p.models) for t, p in DEFAULT_PLANS.items()}


class RunnerSettings(
    RuntimeSettings, DatabaseSettings, PlanSettings, SnapshotStoreSettings, ScreenshotSettings
):
    """Model, sandbox, loop limits and the database of checkpoints; the plans (the models and
    the tool calls of each tier: ``MODEL_MAP``, ``MAX_TOOL_CALLS``) are the settings every
    service reads alike (:class:`~cofounder_budgeting.settings.PlanSettings`); so are where
    snapshots go (a replacement sandbox gets the latest:
    :class:`~cofounder_snapshots.config.SnapshotStoreSettings`) and where screenshots go
    (:class:`~cofounder_snapshots.screenshots.ScreenshotSettings`).

    The runner's consumer keeps one entry pending per running build, so ``CONSUMER_CONCURRENCY``
    is the number of builds one process drives at once.
    """

    consumer_concurrency: int = Field(default=100, description="Builds driven at once per process.")
    work_max_deliveries: int = Field(
        default=20,
        description="Deliveries of a build's work entry before it is dead-lettered "
        "(each crash, hand-back or retry counts one).",
    )
    work_claim_per_pass: int = Field(
        default=4,
        description="Builds of a dead runner one runner takes over per janitor pass (the rest "
        "are left to the other runners' next passes).",
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, description="Anthropic API key (empty: unset)."
    )
    anthropic_base_url: str | None = Field(
        default=None,
        description="Messages API base URL (a compatible or the scripted server); unset: "
        "Anthropic's with a key, SCRIPTED_MODEL_URL without one.",
    )
    scripted_model_url: str | None = Field(
        default=None,
        description="The scripted model's URL, used only while ANTHROPIC_API_KEY is unset (and "
        "ANTHROPIC_BASE_URL too): a key is never sent to a server nobody asked for by name.",
    )
    fallback_model: str = Field(
        default="claude-haiku-5-5", description="Used after repeated 529 (overloaded) answers."
    )
    overloaded_before_fallback: int = Field(
        default=3, description="Consecutive 529 answers after which the fallback model is used."
    )
    model_attempts: int = Field(
        default=8,
        description="Attempts per model call (429, 529, 5xx, cut streams) before "
        "the build is handed back for a later retry.",
    )
    model_backoff_s: float = Field(default=1.0, description="First backoff between attempts.")
    model_backoff_max_s: float = Field(default=30.0, description="Longest backoff.")
    model_timeout_s: float = Field(default=600.0, description="Per-request timeout.")
    prompt_caching: bool = Field(
        default=True, description="Cache breakpoints on the tools, system prompt and rolling end."
    )
    max_tokens: int = Field(default=8_192, description="max_tokens of each model call.")
    context_window: int = Field(default=200_000, description="The model's context window.")
    compact_at: float = Field(
        default=0.75,
        description="Compact the conversation when a prompt passes this share "
        "of the context window.",
    )
    max_wall_s: float = Field(default=4 * 3600, description="Wall time a build may run.")
    stuck_repeats: int = Field(
        default=3,
        description="The same failing tool call this many times in a row: a nudge; "
        "as many again: the build stops as stuck.",
    )
    snapshot_every: int = Field(default=25, description="Ask for a snapshot every N tool calls.")
    bash_timeout_s: float = Field(default=120.0, description="Timeout of one bash command.")
    lease_ttl_ms: int = Field(
        default=20_000,
        description="Build lease TTL; must be below CONSUMER_MIN_IDLE_MS so a "
        "crashed runner's lease is gone before its build is claimed.",
    )
    sandbox: Literal["auto", "local", "e2b"] = Field(
        default="auto",
        description="auto: E2B when E2B_API_KEY is set, else local (`cofounder dev` with e2b "
        "and no E2B_API_KEY: E2B's SDK against the local E2B stand-in it starts).",
    )
    sandbox_root: str = Field(
        default=".cofounder/sandboxes", description="Folder of local sandboxes."
    )
    sandbox_isolation: Literal["namespaces", "unsafe-none"] = Field(
        default="namespaces",
        description="Local sandboxes: namespaces (bubblewrap, pasta; refuses to start without "
        "them) or unsafe-none (development only: no isolation, loudly logged).",
    )
    sandbox_egress: bool = Field(
        default=True,
        description="Local sandboxes reach the internet (package installs); never the host's "
        "loopback or private addresses.",
    )
    sandbox_limits: dict[str, dict[str, int]] = Field(
        default={},
        description="Local sandbox limits per tier (JSON; 'default' for the rest): memory_bytes "
        "(per process), total_memory_bytes (all processes, where cgroups can be made), "
        "processes, cpu_seconds (per process), file_bytes, open_files.",
    )
    sandbox_after_build: Literal["auto", "keep", "pause", "kill"] = Field(
        default="auto",
        description="What a completed build's sandbox becomes: keep (its preview stays up until "
        "the sandbox's own timeout), pause or kill; auto: kill a local sandbox (it has no "
        "timeout), keep an E2B one (E2B_TIMEOUT_S ends it). Failed and cancelled builds' "
        "sandboxes are always killed.",
    )
    sandbox_local_in_production: bool = Field(
        default=False,
        description="Allow local sandboxes outside ENVIRONMENT=development (E2B is production's).",
    )
    screenshot_max_bytes: int = Field(
        default=1_000_000,
        ge=10_000,
        description="A screenshot PNG above this is re-encoded smaller (palette, then halved) "
        "before the model, the store and the feed get it.",
    )
    e2b_api_key: SecretStr | None = Field(default=None, description="E2B API key.")
    e2b_template: str = Field(default="base", description="E2B sandbox template.")
    e2b_timeout_s: int = Field(default=3600, description="E2B sandbox timeout.")

    @model_validator(mode="after")
    def _a_model_to_call(self) -> RunnerSettings:
        if not self.anthropic_api_key and self.model_base_url is None:
            raise ValueError(
                "ANTHROPIC_API_KEY is not set: set it, or ANTHROPIC_BASE_URL (or "
                "SCRIPTED_MODEL_URL) to a compatible server (`cofounder dev` starts one)"
            )
        return self

    @property
    def model_base_url(self) -> str | None:
        """Where model calls go: ``ANTHROPIC_BASE_URL``; else Anthropic's API (``None``) with a
        key, the scripted model without one."""
        if self.anthropic_base_url:
            return self.anthropic_base_url
        return None if self.anthropic_api_key else self.scripted_model_url

    @model_validator(mode="after")
    def _lease_below_min_idle(self) -> RunnerSettings:
        if self.lease_ttl_ms >= self.consumer_min_idle_ms:
            raise ValueError(
                "LEASE_TTL_MS must be below CONSUMER_MIN_IDLE_MS: a crashed runner's lease must "
                "expire before another runner claims its build"
            )
        return self

    @model_validator(mode="after")
    def _local_sandbox_allowed(self) -> RunnerSettings:
        if self.environment == "development" or self.sandbox_kind == "e2b":
            return self
        if self.sandbox_isolation == "unsafe-none":
            raise ValueError("SANDBOX_ISOLATION=unsafe-none is for ENVIRONMENT=development only")
        if not self.sandbox_local_in_production:
            raise ValueError(
                "local sandboxes outside development need SANDBOX_LOCAL_IN_PRODUCTION=true "
                "(E2B, with E2B_API_KEY, is the production sandbox)"
            )
        return self

    @property
    def after_build(self) -> Literal["keep", "pause", "kill"]:
        """The completed build's sandbox policy, ``auto`` resolved by the sandbox kind."""
        if self.sandbox_after_build == "auto":
            return "keep" if self.sandbox_kind == "e2b" else "kill"
        return self.sandbox_after_build

    @property
    def sandbox_kind(self) -> Literal["local", "e2b"]:
        if self.sandbox == "auto":
            return "e2b" if self.e2b_api_key else "local"
        return self.sandbox
