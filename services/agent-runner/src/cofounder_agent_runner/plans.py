"""Which model a build uses: the user's tier, through the configured map, for a role.

The rule is the domain's (``cofounder_domain.plans``); the runner's callers import it from here.
"""

from __future__ import annotations

from cofounder_domain.plans import BuildBlocked, UnknownTier, resolve_model

__all__ = ["BuildBlocked", "UnknownTier", "resolve_model"]
