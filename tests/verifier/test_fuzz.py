"""Property-based proof that no input makes ``verify`` raise anything but InvalidToken.

Besides "never crashes", a sharper property: every change to a valid token's text is
refused (the strict encodings leave no second spelling; tests/shared/test_encoding.py holds
the decoders to reference definitions). The safety net inside ``verify`` (which
turns a bug into a refusal) must never fire: ``unexpected_errors`` stays 0 throughout.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyherald.shared.encoding import b64url_decode, b64url_encode, loads_object
from keyherald.verifier.errors import InvalidToken

from .validator_kit import Kit, forge

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
KIT = Kit("ES256")
VALIDATOR = KIT.validator()
TOKEN = KIT.token()
CLAIMS = KIT.claims()
HEADERS = {alg: KIT.token(key=key).split(".")[0] for alg, key in KIT.others.items()}


def outcome(token: Any) -> dict[str, Any] | str:
    """The claims, or the refusal reason; any other exception fails the test."""
    try:
        return VALIDATOR.verify(token)
    except InvalidToken as exc:
        assert str(exc) and (not isinstance(token, str) or len(token) < 16 or token not in str(exc))
        return exc.reason
    finally:
        assert VALIDATOR.counters["unexpected_errors"] == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
token_like = st.text(alphabet=B64 + ".=+/ \n\t\x00é🚀", max_size=300)


@FUZZ
@given(st.one_of(st.text(max_size=400), token_like, st.binary(max_size=400)))
def test_random_text_and_bytes_are_refused(value: str | bytes) -> None:
    assert isinstance(outcome(value), str)


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.floats(), st.lists(st.text()), st.dictionaries(st.text(), st.text())))
def test_values_that_are_not_text_are_malformed(value: Any) -> None:
    assert outcome(value) == "malformed"


@FUZZ
@given(st.integers(0, len(TOKEN) - 1), st.characters(codec="utf-8"))
def test_any_single_character_change_is_refused(index: int, char: str) -> None:
    mutated = TOKEN[:index] + char + TOKEN[index + 1:]
    if mutated == TOKEN:
        assert outcome(mutated) == CLAIMS
    else:
        assert isinstance(outcome(mutated), str)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(TOKEN)), st.sampled_from(["insert", "delete"]),
                          st.sampled_from(list(B64 + ".="))), min_size=1, max_size=4))
def test_insertions_and_deletions_are_refused(edits: list[tuple[int, str, str]]) -> None:
    mutated = TOKEN
    for index, kind, char in edits:
        index = min(index, len(mutated))
        mutated = mutated[:index] + char + mutated[index:] if kind == "insert" else \
            mutated[:index] + mutated[index + 1:]
    if mutated != TOKEN:
        assert isinstance(outcome(mutated), str)


@FUZZ
@given(st.sampled_from([0, 1]), st.sampled_from(["pad", "std", "reorder", "spaces", "other-alg"]))
def test_re_encoded_or_swapped_parts_are_refused(index: int, how: str) -> None:
    parts = TOKEN.split(".")
    data = b64url_decode(parts[index])
    if how == "pad":
        parts[index] += "=" * (-len(parts[index]) % 4 or 4)
    elif how == "std":
        parts[index] = b64url_encode(data).replace("-", "+").replace("_", "/") + "A"
    elif how == "reorder":
        parts[index] = b64url_encode(json.dumps(dict(reversed(loads_object(data).items()))).encode())
    elif how == "spaces":
        parts[index] = b64url_encode(json.dumps(loads_object(data), indent=1).encode())
    else:
        parts[0] = HEADERS["RS256" if index else "EdDSA"]  # a header from another key's token
    assert isinstance(outcome(".".join(parts)), str)


@FUZZ
@given(st.dictionaries(st.sampled_from(["exp", "iat", "nbf", "aud", "iss", "sub", "jti", "x"]),
                       json_values, max_size=6))
def test_signed_claims_of_any_shape_are_checked_not_crashed_on(changes: dict[str, Any]) -> None:
    """Validly signed garbage: huge numbers, floats, nesting, non-ASCII, wrong types."""
    claims = {**CLAIMS, **changes}
    result = outcome(forge({"alg": "ES256", "kid": KIT.key.kid, "typ": "at+jwt"}, claims, KIT.key.sign))
    if isinstance(result, dict):
        assert result == json.loads(json.dumps(claims))


@FUZZ
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_signed_headers_of_any_shape_are_refused_or_checked(extra: dict[str, Any]) -> None:
    header = {"alg": "ES256", "kid": KIT.key.kid, "typ": "at+jwt", **extra}
    result = outcome(forge(header, CLAIMS, KIT.key.sign))
    assert result == CLAIMS or isinstance(result, str)


@FUZZ
@given(st.integers(1, 3000))
def test_deep_nesting_is_malformed_not_a_recursion_error(depth: int) -> None:
    body = ("[" * depth + "]" * depth).encode()
    claims = json.dumps(CLAIMS)[:-1] + ', "deep": ' + body.decode() + "}"
    result = outcome(forge({"alg": "ES256", "kid": KIT.key.kid, "typ": "at+jwt"}, claims.encode(), KIT.key.sign))
    assert isinstance(result, dict) or result == "malformed"


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=B64 + "=+/ \n", max_size=100), st.sampled_from([1, 2]))
def test_the_validators_inlined_decoding_refuses_exactly_what_the_shared_decoder_refuses(
    text: str, index: int
) -> None:
    """The validator inlines base64url decoding for the payload and signature (the hot
    path): a part is ``malformed`` exactly when the shared decoder refuses it; otherwise the
    signature decides."""
    parts = TOKEN.split(".")
    parts[index] = text
    try:
        b64url_decode(text)
        refused = False
    except ValueError:
        refused = True
    result = outcome(".".join(parts))
    assert (result == "malformed") == refused
    assert refused or result in ("bad_signature", CLAIMS) or text == TOKEN.split(".")[index]
