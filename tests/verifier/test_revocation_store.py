"""The agent's compact store answers exactly as the issuer's store of jtis, at every step."""

from __future__ import annotations

import random

import pytest

from keyherald.shared.revocations import RevokedTokens, grouped
from keyherald.verifier import revocations
from keyherald.verifier.jtitable import JtiTable
from keyherald.verifier.revocations import CompactRevocations


def _same(compact: CompactRevocations, reference: RevokedTokens, probes: list[str], now: int) -> None:
    assert len(compact) == len(reference)
    for jti in probes:
        if jti in reference:
            assert jti in compact and compact.get(jti) == reference.get(jti), jti
        else:  # gone, or passed and not yet rebuilt away: it can only match an expired token
            assert compact.get(jti, 0) < now, jti


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_it_follows_the_issuers_store_through_revocations_prunes_and_merges(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random revocations (some of a jti again, later or earlier), prunes as time goes on, and
    overlay merges (made frequent here) leave the same live set as the jti dict."""
    monkeypatch.setattr(revocations, "MERGE_MIN", 64)
    rng = random.Random(seed)
    jtis = [f"jti-{i}" for i in range(3000)]
    start = {j: 1000 + rng.randrange(600) for j in jtis[:1500]}
    reference = RevokedTokens(start.items())
    compact = CompactRevocations.from_groups(grouped(start.items()))
    now = 1000
    for step in range(40):
        batch = [(rng.choice(jtis), now + rng.randrange(900)) for _ in range(rng.randrange(1, 120))]
        reference.revoke_many(batch)
        compact.revoke_many(batch)
        if step % 3 == 0:
            jti, end = rng.choice(jtis), now + rng.randrange(900)
            reference.revoke(jti, end)
            compact.revoke(jti, end)
        now += rng.randrange(40)
        reference.prune(now)
        compact.prune(now)
        _same(compact, reference, rng.sample(jtis, 400), now)
    # What is live is never lost; what a merge dropped had passed.
    assert all(j in compact for j in reference)
    assert compact.held <= len(reference) * 9 // 8 + 64 * 2


def test_passed_entries_go_and_a_lookup_of_a_stranger_misses() -> None:
    compact = CompactRevocations.from_groups([(100 + i, [f"t{i}"]) for i in range(1000)])
    assert "t999" in compact and "stranger" not in compact and len(compact) == 1000
    compact.prune(600)  # every end below 600 passed: more than an eighth, so the base is rebuilt
    assert len(compact) == 500 and compact.held == 500 and "t499" not in compact and "t500" in compact


def test_a_copy_is_independent_and_the_generation_moves_on_every_revocation() -> None:
    compact = CompactRevocations.from_groups([(500, ["a"])])
    copy, generation = compact.copy(), compact.generation
    copy.revoke("b", 600)
    assert "b" in copy and "b" not in compact and compact.generation == generation
    compact.revoke("c", 600)
    assert compact.generation != generation


def test_what_a_new_log_lacks_is_kept_and_absorbed_back() -> None:
    """A log replacing another (Redis restored) lacks a revocation: the agent keeps it."""
    old = CompactRevocations.from_groups([(900, ["both", "kept"])])
    new = CompactRevocations.from_groups([(900, ["both"])])
    extra = old.beyond(new)
    assert len(extra) == 1 and "kept" in extra
    new.absorb(extra, 0)
    assert "kept" in new and len(new) == 2
    new.absorb(RevokedTokens([("from-file", 950)]), 0)
    assert "from-file" in new and len(new) == 3


@pytest.mark.parametrize("merge_min", [2, 4096])  # the table, or the overlay for a small checkpoint
def test_a_jti_in_two_groups_of_a_checkpoint_keeps_its_later_end(
    merge_min: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not what an issuer writes, but a reader gives it the fold's meaning: one entry, the later end."""
    monkeypatch.setattr(revocations, "MERGE_MIN", merge_min)
    compact = CompactRevocations.from_groups([(900, ["j", "k"]), (700, ["j", "l"]), (800, ["j"])])
    assert (compact.get("j"), compact.get("k"), compact.get("l"), len(compact), compact.held) == (900, 900, 700, 3, 3)
    compact.prune(850)  # "j" outlives the prune of its earlier ends
    assert "j" in compact and compact.get("j") == 900


def test_memory_stays_bounded_through_churn_and_lookups_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens revoked and passing for hours of issuer time: passed entries are deleted in place
    and their slots reused or rebuilt away, so the table never outgrows what is live."""
    monkeypatch.setattr(revocations, "MERGE_MIN", 64)
    rng = random.Random(7)
    start = {f"start-{i}": 1000 + rng.randrange(300) for i in range(20_000)}  # an incident's worth, passing
    compact = CompactRevocations.from_groups(grouped(start.items()))
    reference = RevokedTokens(start.items())
    now, serial = 1000, 0
    for _ in range(300):
        batch = [(f"t{serial + i}", now + rng.randrange(300)) for i in range(rng.randrange(20, 60))]
        serial += len(batch)
        compact.revoke_many(batch)
        reference.revoke_many(batch)
        now += 10
        compact.prune(now)
        reference.prune(now)
        table = compact._parts[0]
        assert len(table.keys) <= 6 * max(len(reference), 64) and compact.held <= len(reference) * 9 // 8 + 128
    probes = [f"t{i}" for i in range(serial - 3000, serial)] + [f"start-{i}" for i in range(50)]
    _same(compact, reference, probes, now)
    assert len(compact) == len(reference)


def test_a_prune_at_a_fractional_horizon_counts_as_the_issuer_does() -> None:
    """Heartbeat times are fractional: an entry ending at the horizon's whole second has passed."""
    items = [(f"t{i}", 1_800_000_000 + i // 300) for i in range(6000)]
    reference, compact = RevokedTokens(items), CompactRevocations.from_groups(grouped(items))
    for store in (reference, compact):
        store.prune(1_800_000_010.25)
    assert len(compact) == len(reference) == 2700


def test_len_seen_from_another_thread_mid_prune_is_a_whole_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """status() on another thread may run while a prune deletes in place: it sees the count
    before the prune or after it, never a deleted entry subtracted twice."""
    items = [(f"a{i}", 100) for i in range(6000)] + [(f"b{i}", 10_000) for i in range(3830)]
    store = CompactRevocations.from_groups(grouped(items))
    seen: list[int] = []
    delete_passed = JtiTable.delete_passed

    def watched(table: JtiTable) -> None:
        delete_passed(table)
        seen.append(len(store))

    monkeypatch.setattr(JtiTable, "delete_passed", watched)
    store.prune(200)
    assert seen == [9830] and len(store) == 3830


def test_a_resync_absorbing_the_same_revocations_does_not_grow_the_table() -> None:
    items = [(f"jti-{i}", 1_800_000_000 + i % 3600) for i in range(50_000)]
    old, new = CompactRevocations.from_groups(grouped(items)), CompactRevocations.from_groups(grouped(items))
    slots = len(new._parts[0].keys)
    new.absorb(old, 1_799_999_000)
    assert len(new) == 50_000 and len(new._parts[0].keys) == slots


def test_a_horizon_beyond_32_bits_leaves_lookups_working() -> None:
    """Ends are kept in 32 bits: a signed time past 2106 must not mark empty slots deleted
    (a lookup would then find no empty slot to stop at)."""
    old = CompactRevocations.from_groups([(1_800_000_000, ["a", "b", "c"])])
    kept = old.beyond(CompactRevocations.from_groups([(1_800_000_000, ["a"])]))
    kept.prune(4_294_967_297)
    assert 0 in kept._parts[0].keys and "x" not in kept and len(kept) == 0


def test_a_new_stores_view_shows_what_it_holds() -> None:
    store = CompactRevocations()
    store.revoke("x", 2_000_000_000)
    recent, _ = store.view
    assert "x" in recent and len(store) == 1


def test_absorbing_later_ends_of_passed_entries_never_fills_the_table() -> None:
    """Passed entries a rebuild drops come back through the merge: the new table is sized for
    them (a full table would leave a lookup no empty slot to stop at)."""
    store = CompactRevocations()
    store.prune(1000)
    store.revoke_many((f"t{i}", 500) for i in range(9830))  # already expired when revoked
    other = CompactRevocations.from_groups(grouped([(f"t{i}", 5000) for i in range(9830)]
                                                   + [(f"n{i}", 5000) for i in range(2000)]))
    store.absorb(other, 1000)
    table = store._parts[0]
    assert table.room(0) and "stranger" not in store and len(store) == 11830 and store.get("t7") == 5000


def test_len_costs_nothing_with_many_distinct_ends() -> None:
    """Day-long tokens give tens of thousands of distinct ends: a revocation must not walk them."""
    store = CompactRevocations.from_groups(grouped((f"t{i}", 1000 + i) for i in range(50_000)))
    store.prune(1200)
    assert len(store) == 49_800
    walked = []

    class Counting(dict[int, int]):
        def items(self):  # type: ignore[no-untyped-def, override]
            walked.append(1)
            return super().items()

    store._parts[0].counts = Counting(store._parts[0].counts)
    for i in range(100):
        store.revoke(f"new-{i}", 90_000)
    assert not walked and len(store) == 49_900
