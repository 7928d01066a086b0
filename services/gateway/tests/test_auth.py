"""The token verifier: remembered tokens still expire on time, forged ones are never remembered."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from cofounder_gateway.auth import TokenVerifier, mint_token
from cofounder_gateway.problems import ApiError

SECRET = "a-test-secret-of-enough-length-0123456789"
USER = str(uuid.uuid4())


def test_a_remembered_token_expires_on_time() -> None:
    verifier = TokenVerifier(SECRET)
    now = time.time()
    token = mint_token(SECRET, USER, ttl_s=60, now=now)
    assert verifier.user(token, now=now) == USER
    assert verifier.user(token, now=now + 30) == USER  # remembered: no decode
    with pytest.raises(ApiError) as expired:
        verifier.user(token, now=now + 61)
    assert expired.value.code == "token_expired"


def test_forged_and_tampered_tokens_are_refused_and_not_remembered() -> None:
    verifier = TokenVerifier(SECRET, remember=2)
    good = mint_token(SECRET, USER, ttl_s=60)
    assert verifier.user(good) == USER
    forged = mint_token("another-secret-of-enough-length-0123456", USER, ttl_s=60)
    tampered = good[:-3] + ("aaa" if not good.endswith("aaa") else "bbb")
    unsigned = jwt.encode({"sub": USER, "exp": time.time() + 60}, key="", algorithm="none")
    # Signed with the right secret, but its subject is no user id the gateway could have minted.
    not_a_user = mint_token(SECRET, "user-1", ttl_s=60)
    for bad in (forged, tampered, unsigned, not_a_user, "not-a-token"):
        with pytest.raises(ApiError) as refused:
            verifier.user(bad)
        assert refused.value.code == "invalid_token", bad
        with pytest.raises(ApiError):
            verifier.user(bad)  # a second try is checked again, not answered from memory
    # Bounded: the oldest remembered token is dropped, and still verifies when seen again.
    users = [str(uuid.uuid4()) for _ in range(3)]
    tokens = [mint_token(SECRET, user, ttl_s=60) for user in users]
    assert [verifier.user(t) for t in tokens] == users
    assert len(verifier._verified) == 2
    assert verifier.user(tokens[0]) == users[0]
