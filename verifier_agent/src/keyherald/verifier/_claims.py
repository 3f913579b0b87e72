"""Claim helpers off the validator's hot path: audience forms, NumericDates, safe copies."""

from __future__ import annotations

from collections.abc import Set
from typing import Any, TypeGuard

from .errors import MalformedToken, WrongAudience

__all__ = ["MAX_TIME", "check_audience", "numeric_date", "thaw"]

MAX_TIME = 1 << 53
"""NumericDate bound: beyond it floats lose whole seconds; inf and NaN fail the test too."""


def numeric_date(value: Any) -> TypeGuard[float]:
    """A JSON number (not a bool) in [0, 2**53): what exp, iat and nbf must be."""
    return (type(value) is int or type(value) is float) and 0 <= value < MAX_TIME


def check_audience(aud: Any, audiences: Set[str]) -> None:
    """``aud`` is one string or a list of strings, and one of them is ours (RFC 7519 4.1.3)."""
    if type(aud) is str:
        if aud in audiences:
            return
    elif type(aud) is list:
        if not all(type(a) is str for a in aud):
            raise MalformedToken("token aud is not a string or list of strings")
        if not audiences.isdisjoint(aud):
            return
    elif aud is not None:
        raise MalformedToken("token aud is not a string or list of strings")
    raise WrongAudience("token is not meant for this audience")


def thaw(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts and lists; the rest is immutable), for callers who
    may mutate the claims they get while the cache keeps the original."""
    if type(value) is dict:
        return {k: thaw(v) for k, v in value.items()}
    if type(value) is list:
        return [thaw(v) for v in value]
    return value
