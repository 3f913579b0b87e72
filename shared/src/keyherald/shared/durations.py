"""Durations as operators write them: ``30``, ``30s``, ``5m``, ``24h``, ``1h30m``, ``2d``."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["Duration", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Return seconds (> 0). Raises ValueError with a message fit for an operator."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 24h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise ValueError("expected a duration such as 30s, 5m or 24h, got an empty value")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text):
                raise ValueError(
                    f"{value!r} is not a duration (use seconds or forms like 30s, 5m, 24h, 1h30m)"
                ) from None
    else:
        raise ValueError("expected a duration such as 30s, 5m or 24h")
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{value!r} must be a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 86400 -> '24h', 90 -> '90s', 0.5 -> '500ms'."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            if unit == "d" and count < 7:
                return f"{count * 24}h"
            return f"{count}{unit}"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A settings field type: accepts seconds or duration strings, holds seconds."""
