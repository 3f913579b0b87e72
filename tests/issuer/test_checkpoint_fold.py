"""Checkpoint plus tail equals the fold of the whole log, on a real server, at every point of a
log that checkpoints, trims its stream and prunes expired revocations as it goes, with the
bulk form (``tokens.revoked``) among the events: for the issuer's reader and for an agent's
bootstrap (its compact store)."""

from __future__ import annotations

import pytest

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.logreader import read_log
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared import EVENT_FIELD, ManualClock, Outcome, State
from keyherald.shared.chain import digest
from keyherald.shared.events import EventType
from keyherald.verifier.catchup import from_redis, scratch_of
from keyherald.verifier.keycache import KeyCache
from keyherald.verifier.signedstate import SignedState
from keyherald.verifier.source import LogSource, connect

pytestmark = pytest.mark.redis


class Replay:
    """Every event, read from the stream right after its append (before any trim can take
    it), folded from the log's first event: the whole log's state."""

    def __init__(self, ctx: IssuerContext) -> None:
        self.ctx, self.state, self.after = ctx, State(issuer=""), "-"

    async def catch_up(self) -> None:
        anchor = self.ctx.control.anchor
        for entry_id, fields in await self.ctx.redis.xrange(self.ctx.names.events, min=self.after):
            self.after = f"({entry_id}"
            event = anchor.open_event(fields[EVENT_FIELD])
            if not self.state.log:
                self.state = State.empty(self.ctx.settings.issuer, event.log, seq=event.seq - 1)
            assert self.state.apply(event, digest(fields[EVENT_FIELD])) is Outcome.APPLIED


async def _agent_state(ctx: IssuerContext) -> State:
    signed = SignedState(KeyCache(ctx.settings.issuer), ctx.control.anchor, issuer=ctx.settings.issuer)
    redis = connect(ctx.settings.redis_url)
    try:
        candidate = await from_redis(LogSource(redis, ctx.names), scratch_of(signed))
    finally:
        await redis.aclose()
    assert candidate.problem is None
    return candidate.state


async def test_checkpoint_plus_tail_is_the_whole_fold_across_checkpoints_trims_and_expiry(
    issuer_settings: IssuerSettings, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("keyherald.issuer.checkpoints.CHECKPOINT_EVENTS", 8)
    settings = issuer_settings.model_copy(update={"stream_retain": 10})
    async with IssuerContext(settings, clock=clock) as ctx:
        admin, replay = Admin(ctx), Replay(ctx)
        await Rotator(ctx).tick()
        await replay.catch_up()
        checkpoints, due_writes = set(), 0
        for round_ in range(14):
            now = int(clock())
            await admin.revoke_tokens([(f"bulk-{round_}-{i}", now + 60 + 20 * i) for i in range(30)])
            await replay.catch_up()
            for i in range(8 if round_ % 2 else 1):  # some rounds make a checkpoint due
                await admin.revoke_token(f"single-{round_}-{i}", now + 100)
            await admin.revoke_token(f"bulk-{round_}-0", now + 250)  # again, later: the later end holds
            await admin.revoke_subject(f"client-{round_ % 3}")
            await replay.catch_up()
            clock.advance(45)  # revocations pass their end, heartbeats prune them
            await ctx.log.commit(_heartbeat)
            await replay.catch_up()
            due_writes += await ctx.log.checkpoint()
            checkpoints.add(ctx.log.checkpoints.seq)  # the bulk revocation's, or a due one

            whole = replay.state
            observed = await read_log(ctx.redis, ctx.names, ctx.control.anchor, ctx.settings.issuer)
            assert observed.problem is None and observed.state is not None
            assert observed.state.to_snapshot() == whole.to_snapshot()
            agent = await _agent_state(ctx)
            assert (agent.log, agent.seq, agent.head) == (whole.log, whole.seq, whole.head)
            assert agent.keys == whole.keys and agent.revoked_subjects == whole.revoked_subjects
            assert len(agent.revoked_tokens) == len(whole.revoked_tokens)
            assert all(agent.revoked_tokens.get(jti) == end for jti, end in whole.revoked_tokens.items())

        entries = await ctx.redis.xrange(ctx.names.events, count=1)
        first_kept = int(entries[0][0].split("-")[0])
        assert len(checkpoints) >= 14 and due_writes and first_kept > 1  # checkpoints, and trims
        assert first_kept <= max(checkpoints) + 1  # never past what a checkpoint covers
        pruned = [j for j in (f"bulk-0-{i}" for i in range(30)) if j not in replay.state.revoked_tokens]
        assert pruned  # expiry took some out of the fold, and out of the agent's store with it


async def _heartbeat(state: State, now: float) -> list[tuple[str, dict[str, object]]]:
    return [(str(EventType.HEARTBEAT), {})]
