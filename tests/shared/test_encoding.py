"""Strict base64url and JSON: one spelling per value, so tokens cannot be varied."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyherald.shared.encoding import b64url_decode, b64url_encode, dumps, loads_object

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def reference_b64url(text: str) -> bytes:
    """Canonical base64url by its definition: the alphabet only, no padding, and the one
    spelling that encoding the bytes gives back."""
    if not set(text) <= set(B64) or len(text) % 4 == 1:
        raise ValueError(text)
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        raise ValueError(text)
    return data


def reference_json_object(raw: bytes) -> dict[str, Any]:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise ValueError("duplicate")
        return dict(items)

    def constant(name: str) -> Any:
        raise ValueError(name)

    value = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def outcome(function: Any, value: Any) -> Any:
    try:
        return function(value)
    except (ValueError, RecursionError):
        return "refused"


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"foob", b"\xff\xfe\x00", bytes(range(256))])
def test_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data


@pytest.mark.parametrize(
    "text",
    [
        "Zg==",  # padding
        "Zm9v ",  # whitespace
        "Zm 9v",
        "Zm9v\n",
        "Zm+v",  # standard alphabet
        "Zm/v",
        "Z",  # impossible length
        "Zh",  # non-zero trailing bits ("Zg" is canonical for b"f")
        "Zm9",  # "9" carries trailing bits 01
        "Zé",
    ],
)
def test_non_canonical_base64url_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


@pytest.mark.parametrize("value", [None, 1, ["QQ"], {"x": "QQ"}, bytearray(b"QQ")])
def test_base64url_of_anything_but_text_is_a_value_error(value: object) -> None:
    """JWK members come from JSON: a number or an object where text belongs is refused as
    such, never a KeyError or TypeError from inside the decoder."""
    with pytest.raises(ValueError):
        b64url_decode(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":2}', '{"a":1}'.encode("utf-16"), '{"a":1}'.encode("utf-32-le"), b"[1]", b'"x"',
        b"{'a':1}", b'{"a":NaN}', b'{"a":Infinity}', b"\xff", b"{",
    ],
)
def test_json_must_be_one_strict_object(raw: bytes) -> None:
    with pytest.raises(ValueError):
        loads_object(raw)


def test_dumps_is_deterministic() -> None:
    assert dumps({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=B64 + "=+/ \n.é", max_size=40))
def test_base64url_decoding_is_exactly_the_canonical_definition(text: str) -> None:
    expected = outcome(reference_b64url, text)
    assert outcome(b64url_decode, text) == expected
    if text.isascii():
        assert outcome(b64url_decode, text.encode()) == expected


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: (" " + json.dumps(v) + "\n").encode()),
    st.binary(max_size=40),
    st.dictionaries(st.text(max_size=3), json_values, max_size=4).map(
        lambda d: (json.dumps(d)[:-1] + (', "k": 1, "k": 2}' if d else '"k": 1, "k": 2}')).encode()),
))
def test_json_objects_parse_exactly_as_strict_json_does(data: bytes) -> None:
    """Duplicate members, NaN and Infinity refused, UTF-8 only (json.loads of bytes would
    also guess UTF-16 and UTF-32), whitespace around the object allowed."""
    assert outcome(loads_object, data) == outcome(reference_json_object, data)
