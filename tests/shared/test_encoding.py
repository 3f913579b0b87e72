"""Strict base64url and JSON: one spelling per value, so tokens cannot be varied."""

from __future__ import annotations

import pytest

from keyherald.shared.encoding import b64url_decode, b64url_encode, dumps, loads_object


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
