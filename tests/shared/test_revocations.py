"""The issuer's store of revoked tokens: pruning by time drops exactly what has passed."""

from __future__ import annotations

from keyherald.shared.revocations import RevokedTokens
from keyherald.shared.state import State


def test_prune_drops_what_passed_and_keeps_a_token_revoked_again_later() -> None:
    tokens = RevokedTokens([("a", 100), ("b", 200), ("c", 300)])
    tokens.revoke("a", 400)  # revoked again, later: the earlier end no longer applies
    tokens.revoke("b", 150)  # an earlier end changes nothing
    tokens.prune(250)
    assert dict(tokens.items()) == {"a": 400, "c": 300}
    tokens.prune(1000)
    assert len(tokens) == 0


def test_a_copy_is_independent_and_prunes_like_the_original() -> None:
    tokens = RevokedTokens([("a", 100), ("b", 200)])
    copy = tokens.copy()
    copy.revoke("c", 300)
    copy.prune(150)
    assert dict(copy.items()) == {"b": 200, "c": 300} and dict(tokens.items()) == {"a": 100, "b": 200}


def test_a_state_given_a_plain_mapping_indexes_it() -> None:
    state = State(issuer="https://issuer.example", revoked_tokens={"a": 100, "b": 900})  # type: ignore[arg-type]
    state.prune(100 + 300 + 1)  # a's end plus the grace has passed
    assert dict(state.revoked_tokens.items()) == {"b": 900}  # type: ignore[attr-defined]
