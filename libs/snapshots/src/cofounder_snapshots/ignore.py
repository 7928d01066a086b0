"""What a snapshot leaves out: dependency and build-output folders, caches, version control and
secret-looking files by default; a ``.snapshotignore`` in the project adds rules.

Rules are gitignore-like: one glob per line, ``#`` comments, a trailing ``/`` matches folders
only, a leading ``/`` anchors at the project root, a rule without ``/`` matches a name at any
depth. Negation (``!``) is not supported (a rule cannot re-include what the defaults leave out:
a snapshot must never pick up an ``.env``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_RULES", "IGNORE_FILE", "IgnoreRules"]

IGNORE_FILE: Final = ".snapshotignore"

DEFAULT_RULES: Final = (
    # dependencies and build output
    "node_modules/", ".venv/", "venv/", "__pycache__/", "dist/", "build/", ".next/", ".nuxt/",
    "target/", "coverage/", ".turbo/", ".parcel-cache/", ".svelte-kit/",
    # caches and version control
    ".git/", ".cache/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", "*.pyc", ".DS_Store",
    # secrets
    ".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa*", "id_ed25519*", ".npmrc",
    ".pypirc", ".netrc", "*.secret", "credentials.json",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: str
    directory: bool
    anchored: bool

    def matches(self, path: str, *, is_dir: bool) -> bool:
        if self.directory and not is_dir:
            return False
        if self.anchored:
            return fnmatch.fnmatchcase(path, self.pattern)
        name = path.rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(name, self.pattern) or fnmatch.fnmatchcase(path, self.pattern)


class IgnoreRules:
    """Decides which project paths (relative, ``/``-separated) a snapshot leaves out."""

    def __init__(self, rules: Iterable[str] = DEFAULT_RULES) -> None:
        self._rules: list[_Rule] = []
        self.extend(rules)

    def extend(self, rules: Iterable[str]) -> None:
        for raw in rules:
            line = raw.strip()
            if not line or line.startswith(("#", "!")):
                continue
            directory = line.endswith("/")
            line = line.rstrip("/")
            anchored = line.startswith("/") or "/" in line
            self._rules.append(_Rule(line.lstrip("/"), directory, anchored))

    def with_file(self, text: str) -> IgnoreRules:
        """These rules plus those of a ``.snapshotignore``."""
        combined = IgnoreRules(())
        combined._rules = [*self._rules]
        combined.extend(text.splitlines())
        return combined

    def ignored(self, path: str, *, is_dir: bool = False) -> bool:
        return any(rule.matches(path, is_dir=is_dir) for rule in self._rules)
