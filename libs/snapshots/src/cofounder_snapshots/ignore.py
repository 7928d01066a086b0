"""What a snapshot leaves out: dependency and build-output folders, caches, version control and
secret-looking files by default; a ``.snapshotignore`` in the project adds rules.

Rules are gitignore-like: one glob per line, ``#`` comments, a trailing ``/`` matches folders
only, a leading ``/`` anchors at the project root, a rule without ``/`` matches a name at any
depth. Negation (``!``) is not supported (a rule cannot re-include what the defaults leave out:
a snapshot must never pick up an ``.env``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Final

__all__ = ["DEFAULT_RULES", "IGNORE_FILE", "MAX_PROJECT_RULES", "MAX_RULE_CHARS", "IgnoreRules"]

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


#: The most rules a project's ``.snapshotignore`` adds, and the longest rule: the file is the
#: sandbox's to write, and every rule is tried on every path (110,000 rules made one snapshot
#: of 24 files take 71 s of the snapshot service's CPU). Rules past these are not applied.
MAX_PROJECT_RULES: Final = 1_000
MAX_RULE_CHARS: Final = 256


#: The kinds of rule, each compiled into one expression: (anchored at the root, folders only).
_KINDS: Final = ((True, False), (False, False), (True, True), (False, True))


def _either(patterns: list[str]) -> re.Pattern[str] | None:
    """One expression matching what any of ``patterns`` matches, whole (``fnmatch.translate``
    anchors each at the end; ``match`` anchors at the start)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


class IgnoreRules:
    """Decides which project paths (relative, ``/``-separated) a snapshot leaves out.

    The rules are compiled into four expressions (anchored or not, folders only or not), so a
    path costs four matches however many rules there are."""

    def __init__(self, rules: Iterable[str] = DEFAULT_RULES) -> None:
        self._patterns: dict[tuple[bool, bool], list[str]] = {kind: [] for kind in _KINDS}
        self._compiled: tuple[re.Pattern[str] | None, ...] | None = None
        self.extend(rules)

    def extend(self, rules: Iterable[str], *, limit: int | None = None) -> None:
        added = 0
        for raw in rules:
            line = raw.strip()
            if not line or line.startswith(("#", "!")):
                continue
            if limit is not None and (added >= limit or len(line) > MAX_RULE_CHARS):
                continue
            directory = line.endswith("/")
            line = line.rstrip("/")
            anchored = line.startswith("/") or "/" in line
            self._patterns[(anchored, directory)].append(line.lstrip("/"))
            added += 1
        self._compiled = None

    def with_file(self, text: str) -> IgnoreRules:
        """These rules plus those of a ``.snapshotignore`` (at most :data:`MAX_PROJECT_RULES`,
        of at most :data:`MAX_RULE_CHARS` characters each)."""
        combined = IgnoreRules(())
        combined._patterns = {kind: [*patterns] for kind, patterns in self._patterns.items()}
        combined.extend(text.splitlines(), limit=MAX_PROJECT_RULES)
        return combined

    def _expressions(self) -> tuple[re.Pattern[str] | None, ...]:
        if self._compiled is None:
            self._compiled = tuple(_either(self._patterns[kind]) for kind in _KINDS)
        return self._compiled

    def ignored(self, path: str, *, is_dir: bool = False) -> bool:
        anchored, loose, anchored_dirs, loose_dirs = self._expressions()
        name = path.rsplit("/", 1)[-1]
        for expression, whole_only in (
            (anchored, True),
            (loose, False),
            *(((anchored_dirs, True), (loose_dirs, False)) if is_dir else ()),
        ):
            if expression is None:
                continue
            if expression.match(path) or (not whole_only and expression.match(name)):
                return True
        return False
