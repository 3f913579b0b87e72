"""A log of a future major protocol version: a real agent stops on it with "unsupported
protocol version", never crashes on it nor reads it as something else."""

from __future__ import annotations

import logging

import pytest

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.shared.chain import digest
from keyherald.shared.clock import ManualClock
from keyherald.shared.encoding import dumps
from keyherald.shared.envelope import EVENT_TYP, SNAPSHOT_TYP
from keyherald.shared.events import Event
from keyherald.shared.jws import sign_compact
from keyherald.shared.names import stream_id
from keyherald.shared.revocations import group_items
from keyherald.verifier import BootstrapError, VerifierAgent

from .agent_kit import eventually, mint, refuses, running_agent, settings_for

pytestmark = pytest.mark.redis


async def test_an_agent_starting_on_a_future_major_checkpoint_stops_with_unsupported_version(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    await Admin(issuer).revoke_token("before", int(clock()) + 300)
    state = await issuer.log.read_state()
    key = issuer.control.signing_key
    future = sign_compact({"typ": SNAPSHOT_TYP, "khv": "3.0", "jwk": key.public.jwk},
                          dumps({**state.to_snapshot().model_dump(mode="json"), "revocations": "a new form"}), key)
    await issuer.redis.set(issuer.names.snapshot, future)
    agent = VerifierAgent(settings_for(issuer, startup_timeout="5s"), clock=clock)
    with pytest.raises(BootstrapError, match=r"unsupported protocol version 3\.0 .*upgrade keyherald"):
        await agent.start()
    await agent.stop()
    assert not agent.status().bootstrapped


async def test_a_running_agent_refuses_a_future_major_event_and_says_so(
    issuer: IssuerContext, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The issuer was upgraded past this agent: its next event is of protocol 3. The agent
    applies nothing of it (it cannot know what it means), logs why, and goes stale rather
    than follow on without it."""
    token = await mint(issuer, clock, jti="still-valid")
    async with running_agent(issuer, clock) as agent:
        state = await issuer.log.read_state()
        event = Event(log=state.log, seq=state.seq + 1, prev=state.head, type="token.revoked", time=clock(),
                      issuer=issuer.settings.issuer, data={"jti": "still-valid", "expires_at": int(clock()) + 300})
        text = sign_compact({"typ": EVENT_TYP, "khv": "3.0"}, dumps(event.model_dump(mode="json")),
                            issuer.control.signing_key)
        with caplog.at_level(logging.ERROR, logger="keyherald.verifier"):
            await issuer.redis.xadd(issuer.names.events, {"event": text}, id=stream_id(event.seq))
            await eventually(lambda: agent.status().refused_by_reason.get("unsupported_version", 0) >= 1,
                             within=3, what="the future event refused")
        assert agent.status().seq == state.seq and agent.keys.state.head != digest(text)
        assert "unsupported protocol version 3.0" in caplog.text and "upgrade keyherald" in caplog.text
        assert refuses(agent, token) is None  # nothing misread: the token is as it was


async def test_an_upgraded_agent_starts_from_a_2_2_issuers_checkpoint_and_follows_on(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    """Agents are upgraded before issuers: a 2.3 agent reads the checkpoint a 2.2 issuer wrote
    (revoked tokens as an object jti -> end) to the same state, then follows the log."""
    revoked = await mint(issuer, clock, jti="revoked-before")
    fine = await mint(issuer, clock, jti="still-fine")
    await Admin(issuer).revoke_tokens([("revoked-before", int(clock()) + 300), ("other", int(clock()) + 200)])
    state = await issuer.log.read_state()
    document = state.to_snapshot().model_dump(mode="json")
    document["revoked_tokens"] = dict(group_items(document["revoked_tokens"]))
    key = issuer.control.signing_key
    older = sign_compact({"typ": SNAPSHOT_TYP, "khv": "2.2", "jwk": key.public.jwk}, dumps(document), key)
    await issuer.redis.set(issuer.names.snapshot, older)
    async with running_agent(issuer, clock) as agent:
        assert agent.status().seq == state.seq and agent.status().revoked_tokens == 2
        assert refuses(agent, revoked) == "revoked" and refuses(agent, fine) is None
        await Admin(issuer).revoke_token("still-fine", int(clock()) + 300)
        await eventually(lambda: refuses(agent, fine) == "revoked", within=3, what="the next revocation")
        assert agent.status().revoked_tokens == 3
