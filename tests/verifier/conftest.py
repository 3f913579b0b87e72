"""Fixtures of the verifier's tests."""

from __future__ import annotations

import pytest

from keyherald.issuer.context import IssuerContext

from .agent_kit import genesis


@pytest.fixture
async def issuer(issuer_ctx: IssuerContext) -> IssuerContext:
    """An issuer context after genesis: an active key and a standby, agents can bootstrap."""
    await genesis(issuer_ctx)
    return issuer_ctx
