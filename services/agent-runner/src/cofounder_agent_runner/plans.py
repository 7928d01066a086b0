"""Which model a build uses: the user's tier, through the configured map, for a role."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["BuildBlocked", "UnknownTier", "resolve_model"]


class BuildBlocked(Exception):
    """The user may not build now (suspended); the message is the founder-facing reason."""


class UnknownTier(Exception):
    """The tier has no model for the role in the configured map."""


def resolve_model(
    models: Mapping[str, Mapping[str, str]],
    *,
    tier: str,
    role: str = "coder",
    suspended: bool = False,
    suspension_reason: str | None = None,
) -> str:
    """The model for ``role`` on ``tier``; :class:`BuildBlocked` for a suspended user."""
    if suspended:
        raise BuildBlocked(f"Build blocked: {suspension_reason or 'the account is suspended'}")
    try:
        return models[tier][role]
    except KeyError:
        raise UnknownTier(f"no {role!r} model is configured for tier {tier!r}") from None
