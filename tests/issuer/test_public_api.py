"""keyherald.issuer's exported names are a promise to operators scripting it from Python."""

from __future__ import annotations

import keyherald.issuer as issuer


def test_exported_names_are_pinned_and_sorted() -> None:
    assert issuer.__all__ == sorted(issuer.__all__)
    assert {"Admin", "ClientRegistry", "IssuerContext", "IssuerSettings", "create_worker", "sign_token"} <= set(
        issuer.__all__
    )
    for name in issuer.__all__:
        assert getattr(issuer, name) is not None
