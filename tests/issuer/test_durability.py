"""How many replicas a revocation waits for, and the settings that say so."""

from __future__ import annotations

import pytest

from keyherald.issuer.durability import replicas_needed
from keyherald.issuer.errors import NotReplicated
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.errors import SettingsError
from keyherald.shared.settings import load_settings


@pytest.mark.parametrize(("setting", "connected", "had", "needed"), [
    (None, 0, False, 0),  # a lone server: nothing to wait for
    (None, 2, False, 1),  # replicas: one must hold it
    (None, 0, True, 1),  # replicas that dropped out: still one
    (0, 2, True, 0),  # the operator said none
    (2, 1, False, 2),  # the operator's number, whatever is connected
])
def test_replicas_needed(setting: int | None, connected: int, had: bool, needed: int) -> None:
    assert replicas_needed(setting, connected, had_replicas=had) == needed


@pytest.mark.parametrize("value", ["-1", "17", "many"])
def test_a_bad_min_replicas_is_refused_naming_the_variable(value: str, kek: str) -> None:
    with pytest.raises(SettingsError, match="KEYHERALD_MIN_REPLICAS"):
        load_settings(IssuerSettings, min_replicas=value, kek=kek, _env_file=None)


def test_auto_and_a_number_are_read(kek: str) -> None:
    assert IssuerSettings(min_replicas="auto", kek=kek, _env_file=None).min_replicas is None  # type: ignore[call-arg]
    assert IssuerSettings(min_replicas="2", kek=kek, _env_file=None).min_replicas == 2  # type: ignore[call-arg]


def test_not_replicated_says_plainly_what_happened() -> None:
    error = NotReplicated(seq=42, confirmed=0, needed=1, timeout=2.0)
    assert "seq 42" in str(error) and "0 of the 1 replica(s)" in str(error) and "not done" in str(error)
    assert error.retry_after == 3 and error.code == "not_replicated"
