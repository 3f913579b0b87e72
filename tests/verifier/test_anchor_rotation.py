"""Rotating the trust anchor, against a real server: running agents move their pin, agents
pinned to an earlier anchor start through the chain, and nothing but a verified rotation by
the current anchor moves anyone's pin."""

from __future__ import annotations

import json

import pytest

from keyherald.issuer.admin import Admin
from keyherald.issuer.anchorrotation import rotate_anchor
from keyherald.issuer.context import IssuerContext
from keyherald.shared import EVENT_FIELD
from keyherald.shared.anchorchain import make_link
from keyherald.shared.clock import ManualClock
from keyherald.shared.envelope import ControlKey
from keyherald.shared.events import Event, EventType
from keyherald.verifier import BootstrapError, VerifierAgent

from .agent_kit import eventually, mint, refuses, running_agent, settings_for

pytestmark = pytest.mark.redis


async def _append_raw(issuer: IssuerContext, key: ControlKey, kind: str, data: dict[str, object]) -> None:
    """What someone holding ``key`` and Redis write access could put at the next seq."""
    state = await issuer.log.read_state()
    event = Event(log=state.log, seq=state.seq + 1, prev=state.head, type=kind, time=state.time + 1,
                  issuer=issuer.settings.issuer, data=data)
    await issuer.redis.xadd(issuer.names.events, {EVENT_FIELD: key.seal_event(event)}, id=f"{event.seq}-0")


async def _drop_forgery(issuer: IssuerContext) -> None:
    """Remove the forged entry, so that the writer's next event takes its place."""
    state = await issuer.log.read_state()
    await issuer.redis.xdel(issuer.names.events, f"{state.seq + 1}-0")


async def test_running_agents_follow_a_rotation_and_late_agents_start_through_the_chain(
    issuer: IssuerContext, clock: ManualClock
) -> None:
    old = issuer.control.anchor
    async with running_agent(issuer, clock) as agent:
        assert agent.status().anchor == old.thumbprint
        new, events = await rotate_anchor(issuer)
        assert [e.type for e in events] == [EventType.ANCHOR_ROTATED]
        await eventually(lambda: agent.status().anchor == new.anchor.thumbprint, what="the pin moved")
        # Events after the rotation are signed by the new key, and applied.
        token = await mint(issuer, clock, jti="after-rotation")
        await Admin(issuer).revoke_token("after-rotation", int(clock()) + 300)
        await eventually(lambda: refuses(agent, token) == "revoked", what="a revocation signed by the new key")
        assert agent.status().refused_events == 0
    assert issuer.control.anchor.thumbprint == new.anchor.thumbprint  # the writer signs with it now
    # A second rotation, then agents pinned to the first anchor (by thumbprint, or by JWK) start.
    newest, _ = await rotate_anchor(issuer)
    for pin in (old.thumbprint, json.dumps(old.key.jwk if old.key else {})):
        async with VerifierAgent(settings_for(issuer, trust_anchor=pin), clock=clock) as late:
            assert late.status().anchor == newest.anchor.thumbprint
            assert refuses(late, token) == "revoked"


async def test_revoke_previous_cuts_the_old_anchor_out(issuer: IssuerContext, clock: ManualClock) -> None:
    old = issuer.control.anchor.thumbprint
    async with running_agent(issuer, clock) as agent:
        new, _ = await rotate_anchor(issuer, revoke_previous=True)
        await eventually(lambda: agent.status().anchor == new.anchor.thumbprint, what="the pin moved")
    with pytest.raises(BootstrapError, match="pin the current anchor"):
        async with VerifierAgent(settings_for(issuer, trust_anchor=old, startup_timeout="0.5s"), clock=clock):
            pass
    async with VerifierAgent(settings_for(issuer, trust_anchor=new.anchor.thumbprint), clock=clock) as repinned:
        assert repinned.status().anchor == new.anchor.thumbprint


async def test_a_forged_rotation_moves_no_pin_and_is_counted(issuer: IssuerContext, clock: ManualClock) -> None:
    """Three forgeries at the next seq: a rotation signed by a key that is not the anchor; one
    signed by the anchor whose new key never cross-signed it; and, after a genuine rotation,
    an event signed by the key it replaced (a leaked old anchor)."""
    current, stranger, other = issuer.control, ControlKey.generate("EdDSA"), ControlKey.generate("EdDSA")
    async with running_agent(issuer, clock) as agent:
        link = make_link(stranger, other, at=clock())
        await _append_raw(issuer, stranger, str(EventType.ANCHOR_ROTATED), link.model_dump(mode="json"))
        await eventually(lambda: agent.status().refused_by_reason.get("untrusted_signer", 0) >= 1, what="refused")
        await _drop_forgery(issuer)
        await Admin(issuer).revoke_token("x", int(clock()) + 300)
        await eventually(lambda: agent.status().revoked_tokens == 1, within=3, what="the genuine event applied")

        genuine = make_link(current, stranger, at=clock())
        forged = genuine.model_copy(update={"cross": make_link(current, other, at=clock()).cross})
        await _append_raw(issuer, current, str(EventType.ANCHOR_ROTATED), forged.model_dump(mode="json"))
        await eventually(lambda: agent.status().refused_by_reason.get("anchor_chain", 0) >= 1, what="refused")
        assert agent.status().anchor == current.anchor.thumbprint
        await _drop_forgery(issuer)
        await Admin(issuer).revoke_token("y", int(clock()) + 300)
        await eventually(lambda: agent.status().revoked_tokens == 2, within=3, what="the genuine event applied")

        new, _ = await rotate_anchor(issuer)
        await eventually(lambda: agent.status().anchor == new.anchor.thumbprint, what="the pin moved")
        before = agent.status().refused_by_reason.get("untrusted_signer", 0)
        await _append_raw(issuer, current, str(EventType.TOKEN_REVOKED), {"jti": "z", "expires_at": 2_000_000_000})
        await eventually(lambda: agent.status().refused_by_reason.get("untrusted_signer", 0) > before, what="refused")
        assert agent.status().revoked_tokens == 2  # x and y: nothing the old key signed


async def test_a_checkpoint_behind_a_broken_chain_is_refused(issuer: IssuerContext, clock: ManualClock) -> None:
    """A checkpoint signed by another key, carrying a chain from the pin whose endorsement the
    pin never made: an agent starting on it refuses it and says why."""
    current, stranger = issuer.control, ControlKey.generate("EdDSA")
    state = await issuer.log.read_state()
    link = make_link(current, stranger, at=clock())
    broken = link.model_copy(update={"endorsement": make_link(stranger, stranger, at=clock()).endorsement})
    state.anchor, state.anchors = stranger.anchor.thumbprint, [broken]
    await issuer.redis.set(issuer.names.snapshot, stranger.seal_snapshot(state.to_snapshot()))
    with pytest.raises(BootstrapError, match=r"anchor_chain|bad_signature"):
        async with VerifierAgent(settings_for(issuer, startup_timeout="0.5s"), clock=clock):
            pass
