from __future__ import annotations

import pytest

from keyherald.shared.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [("30", 30), (45, 45), (2.5, 2.5), ("30s", 30), ("5m", 300), ("24h", 86400), ("1h30m", 5400),
     ("2d", 172800), ("500ms", 0.5), (" 5M ", 300)],
)
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "5 m", "-5", "0", "0s", "nan", "inf", True, None, "5m5"])
def test_bad_durations_say_what_is_expected(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds, text", [(86400, "24h"), (604800, "7d"), (300, "5m"), (90, "90s"), (0.5, "500ms")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
