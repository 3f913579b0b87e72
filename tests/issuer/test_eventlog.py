"""The log against a real server: gap-free seq under contention, snapshot + tail = replay."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.errors import LogRefused, NamespaceOwnedElsewhere
from keyherald.issuer.kek import WrongKEK, generate_kek_text
from keyherald.issuer.logreader import Observed
from keyherald.issuer.logreader import read_log as read_redis_log
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared import EVENT_FIELD, ManualClock, Outcome, State
from keyherald.shared.chain import digest, genesis_head
from keyherald.shared.envelope import TrustAnchor
from keyherald.shared.errors import SettingsError

pytestmark = pytest.mark.redis


async def read_log(ctx: IssuerContext, after: str = "-") -> list[tuple[str, str]]:
    entries = await ctx.redis.xrange(ctx.names.events, min=after)
    return [(entry_id, fields[EVENT_FIELD]) for entry_id, fields in entries]


async def test_concurrent_writers_never_skip_nor_repeat_a_seq(
    issuer_settings: IssuerSettings, clock: ManualClock
) -> None:
    contexts = [await IssuerContext(issuer_settings, clock=clock).open() for _ in range(4)]
    try:
        await Rotator(contexts[0]).tick()

        async def writer(ctx: IssuerContext, n: int) -> list[int]:
            return [await Admin(ctx).revoke_token(f"jti-{n}-{i}", 1_900_000_000) for i in range(10)]

        results = await asyncio.gather(*(writer(ctx, n) for n, ctx in enumerate(contexts)))
        seqs = sorted(s for r in results for s in r)
        assert seqs == list(range(6, 46))  # 5 genesis events, then 40 revocations, each once
        anchor = contexts[0].control.anchor
        log = await read_log(contexts[0])
        events = [anchor.open_event(raw) for _, raw in log]
        assert [e.seq for e in events] == list(range(1, 46))
        assert [entry_id for entry_id, _ in log] == [f"{e.seq}-0" for e in events]
        assert len({e.log for e in events}) == 1
        # One chain: each event names the digest of the one before it.
        assert events[0].prev == genesis_head(events[0].log)
        assert all(after.prev == digest(raw) for (_, raw), after in zip(log, events[1:], strict=False))
        state = await contexts[0].log.read_state()
        assert len(state.revoked_tokens) == 40
    finally:
        for ctx in contexts:
            await ctx.close()


def fold(events: list[tuple[str, str]], anchor: TrustAnchor, issuer: str) -> State:
    first = anchor.open_event(events[0][1])
    state = State.empty(issuer, first.log)
    for _, raw in events:
        assert state.apply(anchor.open_event(raw), digest(raw)) is Outcome.APPLIED
    return state


async def test_checkpoint_plus_tail_equals_folding_the_whole_log(issuer_ctx: IssuerContext) -> None:
    admin, anchor = Admin(issuer_ctx), issuer_ctx.control.anchor
    await Rotator(issuer_ctx).tick()
    for i in range(5):
        await admin.revoke_token(f"early-{i}", 1_900_000_000)
    assert await issuer_ctx.log.checkpoint(force=True)
    midway = await issuer_ctx.redis.get(issuer_ctx.names.snapshot)
    await admin.revoke_subject("orders")
    await admin.rotate()
    for i in range(5):
        await admin.revoke_token(f"late-{i}", 1_900_000_000)
    # An agent that bootstrapped midway: that checkpoint, then the stream after its position.
    snapshot = anchor.open_snapshot(midway)
    bootstrapped = State.from_snapshot(snapshot)
    for _, raw in await read_log(issuer_ctx, after=f"({snapshot.position}"):
        assert bootstrapped.apply(anchor.open_event(raw), digest(raw)) is Outcome.APPLIED
    replayed = fold(await read_log(issuer_ctx), anchor, issuer_ctx.settings.issuer)
    head = await issuer_ctx.log.read_state()
    assert bootstrapped.to_snapshot() == replayed.to_snapshot() == head.to_snapshot()
    # And what a reader of Redis sees: the checkpoint plus the tail, verified, is the same.
    observed = await observe(issuer_ctx)
    assert observed.problem is None and observed.state is not None
    assert observed.state.to_snapshot() == head.to_snapshot()


async def test_an_append_does_not_rewrite_the_checkpoint(issuer_ctx: IssuerContext) -> None:
    """What an append costs does not grow with the state: the checkpoint is written apart."""
    await Rotator(issuer_ctx).tick()
    await issuer_ctx.log.checkpoint(force=True)
    before = await issuer_ctx.redis.get(issuer_ctx.names.snapshot)
    for i in range(3):
        await Admin(issuer_ctx).revoke_token(f"t-{i}", 1_900_000_000)
    assert await issuer_ctx.redis.get(issuer_ctx.names.snapshot) == before


async def test_trimming_never_drops_an_event_the_checkpoint_does_not_cover(
    issuer_settings: IssuerSettings, clock: ManualClock
) -> None:
    settings = issuer_settings.model_copy(update={"stream_retain": 100})
    async with IssuerContext(settings, clock=clock) as ctx:
        await Rotator(ctx).tick()
        for i in range(250):
            await ctx.log.commit(_revoke(f"jti-{i}"))
        # No checkpoint since genesis: the stream keeps every event, whatever the retention.
        assert (await read_log(ctx))[0][0] == "1-0"
        await ctx.log.checkpoint(force=True)
        checkpoint_seq = (await ctx.log.read_state()).seq
        for i in range(250):
            await ctx.log.commit(_revoke(f"more-{i}"))
        entries = await read_log(ctx)
        first_kept = int(entries[0][0].split("-")[0])
        assert 1 < first_kept <= checkpoint_seq + 1  # trimmed, never past the checkpoint
        observed = await observe(ctx)
        assert observed.problem is None and observed.state is not None
        assert observed.state.to_snapshot() == (await ctx.log.read_state()).to_snapshot()


def _revoke(jti: str):  # type: ignore[no-untyped-def]
    async def mutation(state: State, now: float) -> list[tuple[str, dict[str, object]]]:
        return [("token.revoked", {"jti": jti, "expires_at": 1_900_000_000})]

    return mutation


async def observe(ctx: IssuerContext) -> Observed:
    return await read_redis_log(ctx.redis, ctx.names, ctx.control.anchor, ctx.settings.issuer)


async def test_a_wrong_kek_refuses_to_start(issuer_settings: IssuerSettings, clock: ManualClock) -> None:
    async with IssuerContext(issuer_settings, clock=clock) as ctx:
        await Rotator(ctx).tick()
    wrong = issuer_settings.model_copy(update={"kek": SecretStr(generate_kek_text())})
    with pytest.raises(WrongKEK, match="KEYHERALD_KEK: does not decrypt"):
        await IssuerContext(wrong, clock=clock).open()


async def test_a_namespace_of_another_issuer_is_refused(issuer_settings: IssuerSettings, clock: ManualClock) -> None:
    async with IssuerContext(issuer_settings, clock=clock) as ctx:
        await Rotator(ctx).tick()
    other = issuer_settings.model_copy(update={"issuer": "https://someone-else.test"})
    with pytest.raises(NamespaceOwnedElsewhere, match="belongs to issuer"):
        await IssuerContext(other, clock=clock).open()


async def test_a_forged_checkpoint_is_replaced_by_a_writer_that_knows_the_state(issuer_ctx: IssuerContext) -> None:
    await Rotator(issuer_ctx).tick()
    before = await issuer_ctx.log.read_state()
    raw = await issuer_ctx.redis.get(issuer_ctx.names.snapshot)
    header, payload, signature = raw.split(".")
    await issuer_ctx.redis.set(issuer_ctx.names.snapshot, f"{header}.{payload[:-2]}AA.{signature}")
    await issuer_ctx.redis.set(issuer_ctx.names.head, "junk")
    state = await issuer_ctx.log.read_state()
    assert state.log != before.log and state.previous is not None and state.previous.seq == before.seq
    assert state.keys == before.keys
    observed = await observe(issuer_ctx)
    assert observed.problem is None and observed.state is not None and observed.state.log == state.log


async def test_a_writer_without_the_state_refuses_a_forged_checkpoint(
    issuer_settings: IssuerSettings, clock: ManualClock
) -> None:
    async with IssuerContext(issuer_settings, clock=clock) as ctx:
        await Rotator(ctx).tick()
        raw = await ctx.redis.get(ctx.names.snapshot)
        header, payload, signature = raw.split(".")
        await ctx.redis.set(ctx.names.snapshot, f"{header}.{payload[:-2]}AA.{signature}")
    with pytest.raises(LogRefused, match="does not verify"):
        await IssuerContext(issuer_settings, clock=clock).open()


async def test_junk_in_the_stream_does_not_stop_the_issuer(issuer_ctx: IssuerContext) -> None:
    """Anyone with Redis access can XADD; agents refuse it, and the issuer keeps appending."""
    await Rotator(issuer_ctx).tick()
    await issuer_ctx.redis.xadd(issuer_ctx.names.events, {EVENT_FIELD: "junk"}, id="5-1")
    seq = await Admin(issuer_ctx).revoke_token("x", 1_900_000_000)
    assert seq == 6
    anchor: TrustAnchor = issuer_ctx.control.anchor
    assert anchor.open_event((await read_log(issuer_ctx, after="6-0"))[0][1]).seq == 6


@pytest.mark.parametrize("junk", ["far-future entry", "not a stream"])
async def test_a_stream_blocked_by_someone_else_is_replaced_by_a_new_log(
    issuer_ctx: IssuerContext, junk: str
) -> None:
    """Junk above the head makes every XADD fail; the writer starts a new log from what it
    holds, so nothing is lost and appends go on."""
    await Rotator(issuer_ctx).tick()
    await Admin(issuer_ctx).revoke_token("before-junk", 1_900_000_000)
    before = await issuer_ctx.log.read_state()
    names = issuer_ctx.names
    if junk == "far-future entry":
        await issuer_ctx.redis.xadd(names.events, {EVENT_FIELD: "junk"}, id="9999999999-0")
    else:
        await issuer_ctx.redis.delete(names.events)
        await issuer_ctx.redis.set(names.events, "junk")
    seq = await Admin(issuer_ctx).revoke_token("after-junk", 1_900_000_000)
    state = await issuer_ctx.log.read_state()
    # A new log, numbered on from where the old one was: log.started, then the revocation.
    assert state.log != before.log and seq == before.seq + 2 == state.seq
    assert {"before-junk", "after-junk"} <= set(state.revoked_tokens)
    assert [entry_id for entry_id, _ in await read_log(issuer_ctx)] == [f"{before.seq + 1}-0", f"{seq}-0"]
    assert await Admin(issuer_ctx).revoke_token("next", 1_900_000_000) == seq + 1  # and it goes on


async def test_a_rolled_back_log_is_replaced_by_a_running_writer(issuer_ctx: IssuerContext) -> None:
    """Building on an old state would fork the log; a writer that holds the newer state
    starts a new log from it instead, and readers adopt it."""
    await Rotator(issuer_ctx).tick()
    await issuer_ctx.log.checkpoint(force=True)
    names = issuer_ctx.names
    old_snapshot, old_head = await issuer_ctx.redis.mget(names.snapshot, names.head)
    await Admin(issuer_ctx).revoke_token("kept", 1_900_000_000)
    before = await issuer_ctx.log.read_state()
    await issuer_ctx.redis.mset({names.snapshot: old_snapshot, names.head: old_head})
    await issuer_ctx.redis.delete(names.events)
    await Admin(issuer_ctx).revoke_token("after", 1_900_000_000)
    state = await issuer_ctx.log.read_state()
    assert state.log != before.log
    assert state.previous is not None and (state.previous.log, state.previous.seq) == (before.log, before.seq)
    assert {"kept", "after"} <= set(state.revoked_tokens)


async def test_a_restarted_writer_refuses_a_log_older_than_its_record(
    issuer_settings: IssuerSettings, clock: ManualClock
) -> None:
    async with IssuerContext(issuer_settings, clock=clock) as ctx:
        await Rotator(ctx).tick()
        await ctx.log.checkpoint(force=True)
        old = await ctx.redis.mget(ctx.names.snapshot, ctx.names.head)
        await Admin(ctx).revoke_token("kept", 1_900_000_000)
        await ctx.redis.mset({ctx.names.snapshot: old[0], ctx.names.head: old[1]})
        await ctx.redis.delete(ctx.names.events)
    # A new process with the same state dir: it knows seq 6 existed.
    with pytest.raises(LogRefused, match="older than this host's record"):
        await IssuerContext(issuer_settings, clock=clock).open()
    # With no record at all, the old log is refused too once it is not fresh.
    blank = issuer_settings.model_copy(update={"state_dir": None})
    clock.advance(60)
    with pytest.raises(LogRefused, match="no record of the log"):
        await IssuerContext(blank, clock=clock).open()


async def test_a_host_clock_off_the_redis_clock_refuses_to_start(issuer_settings: IssuerSettings) -> None:
    """Event times (revocation cut-offs, heartbeats) come from the writer's clock."""
    import time

    ahead = IssuerContext(issuer_settings, clock=lambda: time.time() + 60, check_clock=True)
    with pytest.raises(SettingsError, match=r"KEYHERALD_MAX_CLOCK_SKEW: this host's clock is \+6\d\.\ds off"):
        await ahead.open()
    async with IssuerContext(issuer_settings, check_clock=True) as in_sync:
        assert in_sync.redis is not None


async def test_log_time_never_goes_backwards(issuer_ctx: IssuerContext, clock: ManualClock) -> None:
    await Rotator(issuer_ctx).tick()
    clock.advance(-100)  # a writer whose clock is behind the last event's
    events = await issuer_ctx.log.commit(_revoke("late"))
    state = await issuer_ctx.log.read_state()
    assert events[0].time == state.time >= clock() + 100


async def test_the_audit_writes_back_a_checkpoint_that_is_not_ours(issuer_ctx: IssuerContext) -> None:
    await Rotator(issuer_ctx).tick()
    await issuer_ctx.log.checkpoint(force=True)
    ours = await issuer_ctx.redis.get(issuer_ctx.names.snapshot)
    await issuer_ctx.redis.set(issuer_ctx.names.snapshot, "x" * 60)
    assert await issuer_ctx.log.audit() == "the checkpoint in Redis is not the one written"
    observed = await observe(issuer_ctx)
    assert observed.problem is None and observed.checkpoint_text is not None
    assert observed.state is not None and observed.state.log == (await issuer_ctx.log.read_state()).log
    assert await issuer_ctx.log.audit() is None
    assert len(await issuer_ctx.redis.get(issuer_ctx.names.snapshot)) >= len(ours) - 10


async def test_the_audit_starts_a_new_log_when_an_event_was_spliced_out(issuer_ctx: IssuerContext) -> None:
    """An old log's genuine event put where the real one was: readers refuse it and stall;
    the writer that appended the real one sees it is gone and starts a new log with it."""
    await Rotator(issuer_ctx).tick()
    names = issuer_ctx.names
    old_log = await read_log(issuer_ctx)
    # A new log, to have an old one whose events exist.
    await issuer_ctx.redis.set(names.head, "junk")
    await Admin(issuer_ctx).revoke_token("first", 1_900_000_000)
    seq = await Admin(issuer_ctx).revoke_token("spliced-out", 1_900_000_000)
    entries = await read_log(issuer_ctx)
    await issuer_ctx.redis.delete(names.events)
    for entry_id, text in entries[:-1]:
        await issuer_ctx.redis.xadd(names.events, {EVENT_FIELD: text}, id=entry_id)
    await issuer_ctx.redis.xadd(names.events, {EVENT_FIELD: old_log[1][1]}, id=f"{seq}-0")
    before = await issuer_ctx.log.read_state()
    assert "not the one appended" in (await issuer_ctx.log.audit() or "")
    after = await issuer_ctx.log.read_state()
    assert after.log != before.log and "spliced-out" in after.revoked_tokens
    assert await issuer_ctx.log.audit() is None


@pytest.mark.parametrize("junk", ["a string", "a list", "another log's head"])
async def test_a_wrong_head_alone_is_written_again_without_a_new_log(issuer_ctx: IssuerContext, junk: str) -> None:
    """One small write to the head key must not make the writer start a new log (which every
    agent answers by fetching the whole checkpoint): the stream and the checkpoint still form
    the log, so the writer writes the head again and appends on the same log."""
    await Rotator(issuer_ctx).tick()
    before = await issuer_ctx.log.read_state()
    names, redis = issuer_ctx.names, issuer_ctx.redis
    if junk == "a list":
        await redis.delete(names.head)
        await redis.rpush(names.head, "x")
    else:
        await redis.set(names.head, "junk" if junk == "a string" else f"AAAAAAAAAAAAAAAAAAAAAA:{before.seq}:x")
    seq = await Admin(issuer_ctx).revoke_token("after-junk", 1_900_000_000)
    state = await issuer_ctx.log.read_state()
    assert state.log == before.log and seq == before.seq + 1 == state.seq
    assert (await redis.get(names.head)).startswith(f"{before.log}:{seq}:")
