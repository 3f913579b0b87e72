"""The log against a real server: gap-free seq under contention, snapshot + tail = replay."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.errors import CorruptState, NamespaceOwnedElsewhere
from keyherald.issuer.kek import WrongKEK, generate_kek_text
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared import EVENT_FIELD, ManualClock, State
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
        assert seqs == list(range(5, 45))  # 4 genesis events, then 40 revocations, each once
        anchor = contexts[0].control.anchor
        log = await read_log(contexts[0])
        events = [anchor.open_event(raw) for _, raw in log]
        assert [e.seq for e in events] == list(range(1, 45))
        assert [entry_id for entry_id, _ in log] == [f"{e.seq}-0" for e in events]
        state = await contexts[0].log.read_state()
        assert len(state.revoked_tokens) == 40
    finally:
        for ctx in contexts:
            await ctx.close()


async def test_snapshot_plus_tail_equals_replaying_the_whole_log(issuer_ctx: IssuerContext) -> None:
    admin, anchor = Admin(issuer_ctx), issuer_ctx.control.anchor
    await Rotator(issuer_ctx).tick()
    for i in range(5):
        await admin.revoke_token(f"early-{i}", 1_900_000_000)
    midway = await issuer_ctx.redis.get(issuer_ctx.names.snapshot)
    await admin.revoke_subject("orders")
    await admin.rotate()
    for i in range(5):
        await admin.revoke_token(f"late-{i}", 1_900_000_000)
    # An agent that bootstrapped midway: the old snapshot, then the stream after its position.
    snapshot = anchor.open_snapshot(midway)
    bootstrapped = State.from_snapshot(snapshot)
    for entry_id, raw in await read_log(issuer_ctx, after=f"({snapshot.position}"):
        bootstrapped.apply(anchor.open_event(raw))
    replayed = State(issuer=issuer_ctx.settings.issuer)
    for _, raw in await read_log(issuer_ctx):
        replayed.apply(anchor.open_event(raw))
    head = await issuer_ctx.log.read_state()
    assert bootstrapped.to_snapshot() == replayed.to_snapshot() == head.to_snapshot()


async def test_trimming_keeps_the_snapshot_whole(issuer_settings: IssuerSettings, clock: ManualClock) -> None:
    settings = issuer_settings.model_copy(update={"stream_retain": 100})
    async with IssuerContext(settings, clock=clock) as ctx:
        all_events = list(await Rotator(ctx).tick())
        admin = Admin(ctx)
        for i in range(250):
            all_events += await ctx.log.commit(_revoke(f"jti-{i}"))
        entries = await read_log(ctx)
        first_kept = int(entries[0][0].split("-")[0])
        assert first_kept > 1 and len(entries) < len(all_events)  # trimmed
        replayed = State(issuer=settings.issuer)
        for event in all_events:
            replayed.apply(event)
        # A fresh agent bootstraps from the snapshot alone and misses nothing.
        snapshot = ctx.control.anchor.open_snapshot(await ctx.redis.get(ctx.names.snapshot))
        assert State.from_snapshot(snapshot).to_snapshot() == replayed.to_snapshot()
        # An agent that fell behind past the trim sees a gap on its next read: it must resync.
        lagging = State(issuer=settings.issuer)
        for event in all_events[:10]:
            lagging.apply(event)
        assert lagging.check(ctx.control.anchor.open_event(entries[0][1])).value == "gap"
        assert (await admin.state()).seq == snapshot.seq


def _revoke(jti: str):  # type: ignore[no-untyped-def]
    async def mutation(state: State, now: float) -> list[tuple[str, dict[str, object]]]:
        return [("token.revoked", {"jti": jti, "expires_at": 1_900_000_000})]

    return mutation


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


async def test_a_snapshot_rewritten_in_redis_is_refused(issuer_ctx: IssuerContext) -> None:
    await Rotator(issuer_ctx).tick()
    raw = await issuer_ctx.redis.get(issuer_ctx.names.snapshot)
    header, payload, signature = raw.split(".")
    await issuer_ctx.redis.set(issuer_ctx.names.snapshot, f"{header}.{payload[:-2]}AA.{signature}")
    with pytest.raises(CorruptState, match="does not verify"):
        await issuer_ctx.log.read_state()


async def test_junk_in_the_stream_does_not_stop_the_issuer(issuer_ctx: IssuerContext) -> None:
    """Anyone with Redis access can XADD; agents refuse it, and the issuer keeps appending."""
    await Rotator(issuer_ctx).tick()
    await issuer_ctx.redis.xadd(issuer_ctx.names.events, {EVENT_FIELD: "junk"}, id="4-1")
    seq = await Admin(issuer_ctx).revoke_token("x", 1_900_000_000)
    assert seq == 5
    anchor: TrustAnchor = issuer_ctx.control.anchor
    assert anchor.open_event((await read_log(issuer_ctx, after="5-0"))[0][1]).seq == 5


@pytest.mark.parametrize("junk", ["far-future entry", "not a stream"])
async def test_a_stream_blocked_by_someone_else_is_restarted_by_the_next_append(
    issuer_ctx: IssuerContext, junk: str
) -> None:
    """Junk above the head would make every XADD fail; the snapshot covers the whole head,
    so the issuer may start the stream afresh and readers lose nothing (a gap resyncs)."""
    await Rotator(issuer_ctx).tick()
    names = issuer_ctx.names
    if junk == "far-future entry":
        await issuer_ctx.redis.xadd(names.events, {EVENT_FIELD: "junk"}, id="9999999999-0")
    else:
        await issuer_ctx.redis.delete(names.events)
        await issuer_ctx.redis.set(names.events, "junk")
    seq = await Admin(issuer_ctx).revoke_token("after-junk", 1_900_000_000)
    assert seq == 5
    log = await read_log(issuer_ctx)
    assert [entry_id for entry_id, _ in log] == ["5-0"]
    assert issuer_ctx.control.anchor.open_event(log[0][1]).data["jti"] == "after-junk"
    assert (await issuer_ctx.log.read_state()).seq == 5
    assert await Admin(issuer_ctx).revoke_token("next", 1_900_000_000) == 6  # and it goes on


async def test_a_replayed_old_snapshot_is_refused_by_a_running_issuer(issuer_ctx: IssuerContext) -> None:
    """Building on an old state would fork the log; a running replica refuses to go back."""
    await Rotator(issuer_ctx).tick()
    names = issuer_ctx.names
    old_snapshot, old_head = await issuer_ctx.redis.mget(names.snapshot, names.head)
    await Admin(issuer_ctx).revoke_token("kept", 1_900_000_000)
    await issuer_ctx.redis.mset({names.snapshot: old_snapshot, names.head: old_head})
    with pytest.raises(CorruptState, match="went back from seq 5 to 4"):
        await Admin(issuer_ctx).revoke_token("forked", 1_900_000_000)
    entries = await read_log(issuer_ctx)
    assert len(entries) == 5  # nothing appended on top of the replay


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
