"""``keyherald clients ...`` (the token service issue fills this in)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    return None
