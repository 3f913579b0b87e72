"""The agent's revoked tokens, compact: about 25 bytes per live revocation, not 400.

A dict of jti strings costs every service that embeds the agent about 400 B per revocation;
at a million, 400 MB. This store keeps 64-bit hashes instead (Python's own ``hash`` of the
jti: keyed per process, computed once per string and cached in it, so an attacker cannot
aim collisions, and the validator's lookup costs no extra hashing):

- a **table**: open addressing with linear probing over two arrays, slot -> ``hash | 1``
  (0: empty; :data:`_DELETED`: an entry gone) and slot -> end (Unix seconds). It is built
  from a checkpoint in one pass, with no sort (a million in about half a second), and a
  lookup reads a slot or two. At most 7/10 of its slots are used; it is rebuilt, twice as
  large or without its deleted slots, when more would be;
- a small **overlay** dict, jti -> end, for events since, moved into the table in place once
  it holds :data:`MERGE_MIN`. While the table is empty (a few thousand revocations) the
  overlay is the whole store, and a lookup costs what a dict's does: the validator reads
  :attr:`CompactRevocations.view` and asks the table only when it holds any.

A revocation goes as soon as no token it covers can be valid: the overlay drops it at the
next prune (each heartbeat); the table deletes its passed entries in place once they are an
eighth of it, and until then a passed entry can only match a token that has expired anyway.

Readers on other threads never see a broken probe chain: an entry is written (end, then
key) into an empty or deleted slot, an end only moves later, a deleted entry leaves a mark
that probes walk past, and a rebuild swaps whole objects. An overlay is never written again
once moved, so a reader holding the old pair still finds everything.

The hashes mean nothing outside this process: this store cannot be written back as jtis
(the checkpoint and the events it came from can; the cache file keeps those).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator
from itertools import compress, count, repeat
from operator import lt, or_

from keyherald.shared.revocations import RevokedTokens, TokenGroups, TokenSet, next_generation

__all__ = ["MERGE_MIN", "CompactRevocations"]

MERGE_MIN = 4096
"""The overlay is moved into the table once it holds this many."""
_END_MAX = (1 << 32) - 1
"""Ends are clamped to 32 bits; an empty or deleted slot's end is this, so it never passes."""
_DELETED = 2
"""Marks a deleted entry's slot (an entry's key is odd: ``hash | 1``)."""
_MIN_SLOTS = 16


def _clamp(end: int) -> int:
    return min(max(end, 0), _END_MAX)


class _Table:
    """The arrays, and how many of their slots hold entries (``live``) or entries and
    deleted marks (``used``)."""

    __slots__ = ("ends", "keys", "live", "mask", "used")

    def __init__(self, entries: int = 0) -> None:
        wanted = max(_MIN_SLOTS, -(-entries * 5 // 3))  # at most 3/5 full once built
        size = 1 << (wanted - 1).bit_length()
        self.keys = array("q", bytes(8 * size))
        self.ends = array("I", b"\xff" * (4 * size))
        self.mask = size - 1
        self.live = 0
        self.used = 0

    def room(self, more: int) -> bool:
        return (self.used + more) * 10 <= len(self.keys) * 7

    def find(self, key: int) -> int:
        """The slot holding ``key``, or -1."""
        keys, mask = self.keys, self.mask
        i = key & mask
        while (held := keys[i]) != key:
            if not held:
                return -1
            i = (i + 1) & mask
        return i

    def put(self, entries: Iterable[tuple[int, int]], counts: dict[int, int]) -> None:
        """Add ``(key, end)`` entries, or move a held key's end later; ``counts`` (entries by
        end) follows. The caller made room. The one hot loop of a start-up: kept flat."""
        keys, ends, mask = self.keys, self.ends, self.mask
        live = used = 0
        for key, end in entries:
            i = key & mask
            free = -1
            while (held := keys[i]) != key:
                if not held:
                    break
                if held == _DELETED and free < 0:
                    free = i
                i = (i + 1) & mask
            else:  # held already: keep the later end
                before = ends[i]
                if end > before:
                    ends[i] = end
                    counts[before] -= 1
                    counts[end] = counts.get(end, 0) + 1
                continue
            if free >= 0:
                i = free
            else:
                used += 1
            ends[i] = end
            keys[i] = key
            live += 1
            counts[end] = counts.get(end, 0) + 1
        self.live += live
        self.used += used

    def fill(self, new: Iterable[int], end: int, counts: dict[int, int]) -> None:
        """:meth:`put` for keys of one end, into a table without deleted slots: the loop of an
        agent's start (a million keys), kept to the least it needs."""
        keys, ends, mask = self.keys, self.ends, self.mask
        added = 0
        for key in new:
            i = key & mask
            while held := keys[i]:
                if held == key:
                    break
                i = (i + 1) & mask
            else:
                ends[i] = end
                keys[i] = key
                added += 1
                continue
            before = ends[i]  # a jti listed twice: keep the later end
            if end > before:
                ends[i] = end
                counts[before] -= 1
                counts[end] = counts.get(end, 0) + 1
        if added:
            counts[end] = counts.get(end, 0) + added
            self.live += added
            self.used += added

    def entries(self, horizon: int = 0) -> list[tuple[int, int]]:
        """Every entry whose end is not before ``horizon``."""
        return [(k, e) for k, e in zip(self.keys, self.ends, strict=True) if k & 1 and e >= horizon]

    def delete_before(self, horizon: int) -> None:
        """Delete, in place, every entry that ends before ``horizon``."""
        keys, ends = self.keys, self.ends
        gone = 0
        for i in compress(count(), map(lt, ends, repeat(horizon))):
            if keys[i] & 1:  # an entry (an empty or deleted slot's end never passes anyway)
                keys[i] = _DELETED
                ends[i] = _END_MAX
                gone += 1
        self.live -= gone

    def copy(self) -> _Table:
        clone = _Table.__new__(_Table)
        clone.keys, clone.ends = array("q", self.keys), array("I", self.ends)
        clone.mask, clone.live, clone.used = self.mask, self.live, self.used
        return clone


def _keyed(jtis: Iterable[str]) -> Iterator[int]:
    return map(or_, map(hash, jtis), repeat(1))


def _hashed(recent: dict[str, int]) -> list[tuple[int, int]]:
    """An overlay's entries as the table keys them."""
    return [(hash(jti) | 1, end) for jti, end in recent.items()]


class CompactRevocations:
    """jti -> end, as :class:`keyherald.shared.revocations.TokenSet` asks, in about 25 B each."""

    __slots__ = ("_counts", "_horizon", "_parts", "_size", "generation", "view")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        """The table's entries by end: how many have passed, without a scan."""
        self._horizon = 0
        """Entries ending before this have passed (a whole second: ends are)."""
        self._size = 0
        self._parts: tuple[_Table, dict[str, int]]
        self.view: tuple[dict[str, int], bool]
        """(overlay, the table holds anything): a jti in the overlay is revoked; one that is
        not needs a table lookup (``in``) only when the flag says so."""
        self._swap(_Table(), {})
        self.generation = next_generation()

    def _swap(self, table: _Table, recent: dict[str, int]) -> None:
        self._parts = (table, recent)
        self.view = (recent, table.live > 0)

    def _publish(self) -> None:
        """Once a change is whole: what ``len()`` says on any thread (counted mid-change, it
        could count a deleted entry twice)."""
        table, recent = self._parts
        self.view = (recent, table.live > 0)
        self._size = table.live - self._passed(self._horizon) + len(recent)

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
            store._publish()
            return store
        table = _Table(size)
        for end, jtis in groups:
            table.fill(_keyed(jtis), _clamp(end), store._counts)
        store._swap(table, {})
        store._publish()
        return store

    # -- lookups (any thread) --------------------------------------------------------------

    def __contains__(self, jti: object) -> bool:
        table, recent = self._parts
        if jti in recent:
            return True
        keys = table.keys  # _Table.find, inlined: this is the validator's lookup
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

    def _passed(self, horizon: float) -> int:
        """How many of the table's entries end before ``horizon``."""
        return sum(n for end, n in list(self._counts.items()) if end < horizon)

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
        self._maybe_merge()
        self._publish()
        self.generation = next_generation()

    def revoke_many(self, tokens: Iterable[tuple[str, int]]) -> None:
        for jti, expires_at in tokens:
            self._add(jti, expires_at)
        self._maybe_merge()
        self._publish()
        self.generation = next_generation()

    def _add(self, jti: str, end: int) -> None:
        table, recent = self._parts
        end = _clamp(end)
        held = recent.get(jti)
        if held is not None:
            if end > held:
                recent[jti] = end
            return
        if table.live and (i := table.find(hash(jti) | 1)) >= 0:  # revoked again: in place
            before = table.ends[i]
            if end > before:
                table.ends[i] = end
                self._counts[before] -= 1
                self._counts[end] = self._counts.get(end, 0) + 1
            return
        recent[jti] = end

    def _maybe_merge(self) -> None:
        if len(self._parts[1]) >= MERGE_MIN:
            self._merge()

    def _merge(self, extra: Iterable[tuple[int, int]] = ()) -> None:
        """Move the overlay (and ``extra`` entries) into the table: in place when it has room,
        else into a new table (larger, or without its deleted slots and passed entries)."""
        table, recent = self._parts
        adds = [*_hashed(recent), *extra]
        if not table.room(len(adds)):
            new = len({key for key, _ in adds if table.find(key) < 0})  # a resync's are mostly held
            if not table.room(new):
                table = self._rebuilt(new)
        table.put(adds, self._counts)
        self._swap(table, {})

    def _rebuilt(self, more: int) -> _Table:
        """A new table holding the live entries, sized for ``more`` besides (the old one stays
        whole for readers that hold it)."""
        kept = self._parts[0].entries(self._horizon)
        table = _Table(len(kept) + more)
        self._counts = {}
        table.put(kept, self._counts)
        return table

    def prune(self, horizon: float) -> None:
        self._horizon = max(self._horizon, math.ceil(min(max(horizon, 0), _END_MAX)))
        horizon = self._horizon
        table, recent = self._parts
        gone = [j for j, end in recent.items() if end < horizon] if recent else []
        for jti in gone:
            del recent[jti]
        passed = self._passed(horizon)
        if passed and passed * 8 >= table.live:
            if (table.live - passed) * 5 < len(table.keys) and len(table.keys) > _MIN_SLOTS:
                table = self._rebuilt(0)  # mostly gone: a smaller table gives the memory back
            else:
                table.delete_before(horizon)
                for end in [e for e in self._counts if e < horizon]:
                    del self._counts[end]
            self._swap(table, recent)
        self._publish()

    def _entries(self) -> list[tuple[int, int]]:
        """Every entry not passed, as (key, end), the overlay's jtis hashed."""
        table, recent = self._parts
        horizon = self._horizon
        return [*table.entries(horizon), *((k, e) for k, e in _hashed(recent) if e >= horizon)]

    def absorb(self, other: TokenSet, horizon: float) -> None:
        if isinstance(other, CompactRevocations):
            self._merge(entry for entry in other._entries() if entry[1] >= horizon)
        elif isinstance(other, RevokedTokens):
            for jti, end in other.items():
                if end >= horizon:
                    self._add(jti, end)
            self._maybe_merge()
        else:
            raise TypeError(f"cannot absorb a {type(other).__name__}")
        self._publish()
        self.generation = next_generation()

    def beyond(self, other: TokenSet) -> CompactRevocations:
        """What ``self`` holds that ``other`` lacks (or ends earlier): rare (a new log), O(n)."""
        if not isinstance(other, CompactRevocations):
            raise TypeError("a compact store compares with another compact store only")
        theirs = dict(other._entries())
        missing = [(k, e) for k, e in self._entries() if theirs.get(k, 0) < e]
        extra = CompactRevocations()
        table = _Table(len(missing))
        table.put(missing, extra._counts)
        extra._swap(table, {})
        extra._horizon = self._horizon
        extra._publish()
        return extra

    def copy(self) -> CompactRevocations:
        """An independent copy (the table's arrays copied whole: a memcpy)."""
        clone = CompactRevocations()
        table, recent = self._parts
        clone._swap(table.copy(), dict(recent))
        clone._counts, clone._horizon = dict(self._counts), self._horizon
        clone._publish()
        return clone

    def __repr__(self) -> str:
        return f"CompactRevocations({len(self)} live)"
