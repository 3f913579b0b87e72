"""The agent's revoked tokens, compact: 20 to 40 bytes per live revocation (27 at a million), not 400.

A dict of jti strings costs every service that embeds the agent about 400 B per revocation;
at a million, 400 MB. This store keeps 64-bit hashes instead (Python's own ``hash`` of the
jti: keyed per process, computed once per string and cached in it, so an attacker cannot
aim collisions, and the validator's lookup costs no extra hashing):

- a **table** (:mod:`.jtitable`): open addressing with linear probing over two arrays of
  hashes and ends, built from a checkpoint in one pass with no sort (a million in about
  half a second); a lookup reads a slot or two. At most 7/10 of its slots are used; it is
  rebuilt, larger or without its deleted slots, when more would be;
- a small **overlay** dict, jti -> end, for events since, moved into the table in place once
  it holds :data:`MERGE_MIN`. While the table is empty (a few thousand revocations) the
  overlay is the whole store, and a lookup costs what a dict's does: the validator reads
  :attr:`CompactRevocations.view` and asks the table only when it holds any.

A revocation goes as soon as no token it covers can be valid: the overlay drops it at the
next prune (each heartbeat); the table deletes its passed entries in place once they are an
eighth of it, and until then a passed entry can only match a token that has expired anyway.

Readers on other threads never see a broken probe chain (:mod:`.jtitable`), a rebuild swaps
whole objects, and ``len()`` is a count published once a change is whole. An overlay is
never written again once moved, so a reader holding the old pair still finds everything.

The hashes mean nothing outside this process: this store cannot be written back as jtis
(the checkpoint and the events it came from can; the cache file keeps those).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from keyherald.shared.revocations import RevokedTokens, TokenGroups, TokenSet, next_generation

from .jtitable import END_MAX, MIN_SLOTS, JtiTable, clamp, keyed

__all__ = ["MERGE_MIN", "CompactRevocations"]

MERGE_MIN = 4096
"""The overlay is moved into the table once it holds this many."""


def _hashed(recent: dict[str, int]) -> list[tuple[int, int]]:
    """An overlay's entries as the table keys them."""
    return [(hash(jti) | 1, end) for jti, end in recent.items()]


class CompactRevocations:
    """jti -> end, as :class:`keyherald.shared.revocations.TokenSet` asks, in about 27 B each."""

    __slots__ = ("_horizon", "_parts", "_size", "generation", "view")

    def __init__(self) -> None:
        self._horizon = 0
        """Entries ending before this have passed (a whole second: ends are)."""
        self._size = 0
        self._parts: tuple[JtiTable, dict[str, int]]
        self.view: tuple[dict[str, int], bool]
        """(overlay, the table holds anything): a jti in the overlay is revoked; one that is
        not needs a table lookup (``in``) only when the flag says so."""
        self._swap(JtiTable(), {})
        self.generation = next_generation()

    def _swap(self, table: JtiTable, recent: dict[str, int]) -> None:
        self._parts = (table, recent)
        self.view = (recent, table.live > 0)

    def _publish(self) -> None:
        """Once a change is whole: what ``len()`` says on any thread (counted mid-change, it
        could count a deleted entry twice)."""
        table, recent = self._parts
        self.view = (recent, table.live > 0)
        self._size = table.live - table.passed + len(recent)

    @classmethod
    def from_groups(cls, groups: TokenGroups) -> CompactRevocations:
        """Build from a checkpoint's groups: one pass, no sort. A few go to the overlay: a
        dict's lookup is faster, and their memory does not matter."""
        store = cls()
        size = sum(len(jtis) for _, jtis in groups)
        if size < MERGE_MIN:
            for end, jtis in groups:
                for jti in jtis:
                    store._add(jti, end)
        else:
            table = JtiTable(size)
            for end, jtis in groups:
                table.fill(keyed(jtis), clamp(end))
            store._swap(table, {})
        store._publish()
        return store

    # -- lookups (any thread) --------------------------------------------------------------

    def __contains__(self, jti: object) -> bool:
        table, recent = self._parts
        if jti in recent:
            return True
        keys = table.keys  # JtiTable.find, inlined: this is the validator's lookup
        mask = table.mask
        key = hash(jti) | 1
        i = key & mask
        while (held := keys[i]) != key:
            if not held:
                return False
            i = (i + 1) & mask
        return True

    def get(self, jti: str, default: int = 0) -> int:
        table, recent = self._parts
        end = recent.get(jti)
        if end is not None:
            return end
        i = table.find(hash(jti) | 1)
        return default if i < 0 else table.ends[i]

    def __len__(self) -> int:
        """Live revocations: the table's not yet passed, plus the overlay's."""
        return self._size

    def __bool__(self) -> bool:
        return len(self) > 0

    @property
    def held(self) -> int:
        """Entries in memory, passed ones not yet deleted included."""
        table, recent = self._parts
        return table.live + len(recent)

    # -- changes (the follower only) --------------------------------------------------------

    def revoke(self, jti: str, expires_at: int) -> None:
        self._add(jti, expires_at)
        self._settle()

    def revoke_many(self, tokens: Iterable[tuple[str, int]]) -> None:
        for jti, expires_at in tokens:
            self._add(jti, expires_at)
        self._settle()

    def _settle(self) -> None:
        """After revocations: the overlay moved into the table once large, then published."""
        if len(self._parts[1]) >= MERGE_MIN:
            self._merge()
        self._publish()
        self.generation = next_generation()

    def _add(self, jti: str, end: int) -> None:
        table, recent = self._parts
        end = clamp(end)
        held = recent.get(jti)
        if held is not None:
            if end > held:
                recent[jti] = end
            return
        if table.live and (i := table.find(hash(jti) | 1)) >= 0:  # revoked again: in place
            table.later(i, end)
            return
        recent[jti] = end

    def _merge(self, extra: Iterable[tuple[int, int]] = ()) -> None:
        """Move the overlay (and ``extra`` entries) into the table: in place when it has room,
        else into a new table (larger, or without its deleted slots and passed entries)."""
        table, recent = self._parts
        adds = [*_hashed(recent), *extra]
        if not table.room(len(adds)):
            # What will take a slot of a rebuilt table (a resync's are mostly held already).
            new = len({key for key, _ in adds if not table.held(key)})
            if not table.room(new):
                table = self._rebuilt(new)
        table.put(adds)
        self._swap(table, {})

    def _rebuilt(self, more: int) -> JtiTable:
        """A new table holding the entries not passed, sized for ``more`` besides (the old
        one stays whole for readers that hold it)."""
        kept = self._parts[0].entries()
        table = JtiTable(len(kept) + more, self._horizon)
        table.put(kept)
        return table

    def prune(self, horizon: float) -> None:
        self._horizon = horizon = max(self._horizon, math.ceil(min(max(horizon, 0), END_MAX)))
        table, recent = self._parts
        gone = [j for j, end in recent.items() if end < horizon] if recent else []
        for jti in gone:
            del recent[jti]
        table.advance(horizon)
        if table.passed and table.passed * 8 >= table.live:
            if (table.live - table.passed) * 5 < len(table.keys) and len(table.keys) > MIN_SLOTS:
                table = self._rebuilt(0)  # mostly gone: a smaller table gives the memory back
            else:
                table.delete_passed()
            self._swap(table, recent)
        self._publish()

    def _entries(self) -> list[tuple[int, int]]:
        """Every entry not passed, as (key, end), the overlay's jtis hashed."""
        table, recent = self._parts
        horizon = self._horizon
        return [*table.entries(), *((k, e) for k, e in _hashed(recent) if e >= horizon)]

    def absorb(self, other: TokenSet, horizon: float) -> None:
        if isinstance(other, CompactRevocations):
            self._merge(entry for entry in other._entries() if entry[1] >= horizon)
        elif isinstance(other, RevokedTokens):
            for jti, end in other.items():
                if end >= horizon:
                    self._add(jti, end)
        else:
            raise TypeError(f"cannot absorb a {type(other).__name__}")
        self._settle()

    def beyond(self, other: TokenSet) -> CompactRevocations:
        """What ``self`` holds that ``other`` lacks (or ends earlier): rare (a new log), O(n)."""
        if not isinstance(other, CompactRevocations):
            raise TypeError("a compact store compares with another compact store only")
        theirs = dict(other._entries())
        missing = [(k, e) for k, e in self._entries() if theirs.get(k, 0) < e]
        extra = CompactRevocations()
        table = JtiTable(len(missing), self._horizon)
        table.put(missing)
        extra._swap(table, {})
        extra._horizon = self._horizon
        extra._publish()
        return extra

    def copy(self) -> CompactRevocations:
        """An independent copy (the table's arrays copied whole: a memcpy)."""
        clone = CompactRevocations()
        table, recent = self._parts
        clone._swap(table.copy(), dict(recent))
        clone._horizon = self._horizon
        clone._publish()
        return clone

    def __repr__(self) -> str:
        return f"CompactRevocations({len(self)} live)"
