"""keyherald.verifier.testing: service owners mint tokens their agent accepts, without Redis."""

from __future__ import annotations

import pytest

from keyherald.shared.clock import ManualClock
from keyherald.verifier import InvalidToken
from keyherald.verifier.testing import TestIssuer


def reason(agent: object, token: str) -> str | None:
    try:
        agent.verify(token)  # type: ignore[attr-defined]
    except InvalidToken as exc:
        return exc.reason
    return None


async def test_minted_tokens_verify_and_operator_actions_reach_the_agent_at_once() -> None:
    clock = ManualClock()
    issuer = TestIssuer(clock=clock)
    agent = issuer.agent(audience="orders")
    async with agent:  # entering an in-memory agent needs no Redis
        token = issuer.mint(sub="billing", aud="orders", scope=["orders:read", "orders:write"])
        claims = agent.verify(token)
        assert claims["sub"] == "billing" and claims["scope"] == "orders:read orders:write"
        assert reason(agent, issuer.mint(aud="inventory")) == "wrong_audience"

        issuer.revoke_subject("billing")
        assert reason(agent, token) == "revoked"
        clock.advance(1)
        assert reason(agent, issuer.mint(sub="billing", aud="orders")) is None

        old = issuer.mint(aud="orders", jti="j1")
        new_kid = issuer.rotate()
        assert issuer.active_kid == new_kid
        assert reason(agent, old) is None and reason(agent, issuer.mint(aud="orders")) is None
        issuer.revoke_token("j1")
        assert reason(agent, old) == "revoked"
        issuer.revoke_key()
        assert reason(agent, issuer.mint(aud="orders", kid=new_kid)) == "key_revoked"
        status = agent.status()
        assert status.source == "memory" and not status.connected and status.refused_events == 0


def test_agents_trust_only_their_own_issuer() -> None:
    ours, theirs = TestIssuer(), TestIssuer()
    agent = ours.agent()
    assert reason(agent, theirs.mint()) == "unknown_key"
    # Events signed by another control key are refused, not applied.
    theirs._agents.append(agent)
    theirs.revoke_subject("test-client")
    assert agent.status().refused_events == 1
    assert reason(agent, ours.mint()) is None


def test_staleness_is_real_in_tests_too() -> None:
    clock = ManualClock()
    issuer = TestIssuer(clock=clock)
    agent = issuer.agent(max_staleness="30s")
    token = issuer.mint()
    clock.advance(31)
    assert reason(agent, token) == "stale"
    issuer.heartbeat()
    assert reason(agent, token) is None


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_every_algorithm(alg: str) -> None:
    issuer = TestIssuer(algorithm=alg)  # type: ignore[arg-type]
    assert issuer.agent().verify(issuer.mint())["iss"] == "https://issuer.test"
