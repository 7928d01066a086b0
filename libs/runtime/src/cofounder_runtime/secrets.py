"""Secrets in settings: how strong one must be, and every value a log must never show.

Settings hold secrets as :class:`pydantic.SecretStr` (their ``repr`` and ``str`` are masked, so a
settings object in a traceback or a log line shows ``**********``); code asks for the value with
``get_secret_value()`` only where it hands it to a client. :func:`secret_values` lists what the
log scrubber (:mod:`cofounder_runtime.logs`) removes from every line, a second line of defence
for whatever a library prints (a DSN in a driver's error message, a header in a traceback).

:func:`require_strong` is the start-up check of secrets outside ``ENVIRONMENT=development``:
long enough, varied enough, and not a value anyone else has seen (a shipped placeholder or a
development default).
"""

from __future__ import annotations

import math
import os
import string
from collections.abc import Iterable
from urllib.parse import urlsplit

from pydantic import SecretStr
from pydantic_settings import BaseSettings

__all__ = [
    "PLACEHOLDER_MARKERS",
    "entropy_bits",
    "require_strong",
    "secret_values",
]

#: Substrings of values nobody should run with: the placeholders shipped in ``deploy/`` and the
#: usual "fill me in" spellings (compared case-insensitively).
PLACEHOLDER_MARKERS = ("replace_with", "replace-with", "change-me", "change_me", "changeme")

#: Secrets read from the environment by libraries rather than through settings (botocore reads
#: the AWS ones itself); the scrubber removes their values too.
_LIBRARY_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

_CLASSES = (
    frozenset(string.ascii_lowercase),
    frozenset(string.ascii_uppercase),
    frozenset(string.digits),
)


def entropy_bits(value: str) -> float:
    """An upper estimate of the randomness in ``value``, in bits: its length times the bits of
    the alphabet its character classes span (lower case, upper case, digits, the rest as the 33
    printable ASCII symbols, anything beyond ASCII as 128 more), capped at twice the bits of the
    number of distinct characters it uses (a random 44-character base64 token uses about 32, a
    repeated pattern a handful). ``openssl rand -hex 32`` gives about 331, ``openssl rand -base64
    32`` about 288, ``openssl rand -hex 16`` 165, ``abab…`` 2 per character, ``aaaa…`` 0."""
    if not value:
        return 0.0
    chars = set(value)
    alphabet = sum(len(c) for c in _CLASSES if chars & c)
    rest = chars.difference(*_CLASSES)
    if any(ch.isascii() for ch in rest):
        alphabet += 33
    if any(not ch.isascii() for ch in rest):
        alphabet += 128
    per_char = math.log2(alphabet) if alphabet > 1 else 0.0
    per_char = min(per_char, 2 * math.log2(len(chars))) if len(chars) > 1 else 0.0
    return len(value) * per_char


def require_strong(name: str, value: str, *, min_bytes: int, known: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` (one line, naming the variable) unless ``value`` is a secret of at
    least ``min_bytes`` random bytes that is neither a placeholder nor one of ``known``."""
    advice = (
        f"set {name} to at least {min_bytes} random bytes (e.g. `openssl rand -hex {min_bytes}`)"
    )
    if not value:
        raise ValueError(f"{name} is not set: {advice}")
    if value in set(known):
        raise ValueError(f"{name} is the published development value: {advice}")
    lowered = value.lower()
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        raise ValueError(f"{name} is still a placeholder: {advice}")
    bits = entropy_bits(value)
    if bits < min_bytes * 8:
        raise ValueError(f"{name} is too weak (about {bits:.0f} of {min_bytes * 8} bits): {advice}")


def secret_values(settings: BaseSettings | None = None) -> list[str]:
    """Every value the logs must not show: each ``SecretStr`` setting of ``settings``, the
    password inside each URL-shaped one, and the library-read secrets of the environment.
    Longest first, so a scrubber replaces a URL before the password inside it. A URL without a
    password (``redis://127.0.0.1:6379/0``) is not secret and stays readable in logs."""
    found: set[str] = set()
    if settings is not None:
        for name in type(settings).model_fields:
            value = getattr(settings, name, None)
            if isinstance(value, SecretStr):
                _add(found, value.get_secret_value())
    for var in _LIBRARY_SECRETS:
        _add(found, os.environ.get(var, ""))
    return sorted(found, key=len, reverse=True)


def _add(found: set[str], secret: str) -> None:
    if "://" in secret:  # a URL is secret for its password only (and then as a whole)
        try:
            password = urlsplit(secret).password
        except ValueError:
            password = None
        if not password:
            return
        found.add(secret)
        secret = password
    if len(secret) >= 4:  # shorter: scrubbing would mangle ordinary text, and it is no secret
        found.add(secret)
