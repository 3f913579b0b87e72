"""The hash table under the agent's compact revocation store (:mod:`.revocations`).

Open addressing with linear probing over two arrays: slot -> ``hash(jti) | 1`` (0: empty;
:data:`DELETED`: an entry gone) and slot -> end (Unix seconds, 32 bits). It is filled from a
checkpoint in one pass with no sort, and a lookup reads a slot or two. At most 7/10 of its
slots are used (entries and deleted marks): the store rebuilds it before more would be.

It also keeps its entries' count by end and how many have passed its horizon, so that the
store's ``len()`` costs nothing, whatever the number of distinct ends (a day-long token
lifetime gives tens of thousands).

Readers on other threads never see a broken probe chain: an entry is written (end, then key)
into an empty or deleted slot, an end only moves later, and a deleted entry leaves a mark that
probes walk past. Only one thread (the follower) changes a table.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from itertools import compress, count, repeat
from operator import lt, or_

__all__ = ["DELETED", "END_MAX", "MIN_SLOTS", "JtiTable", "clamp", "keyed"]

END_MAX = (1 << 32) - 1
"""Ends are clamped to 32 bits; an empty or deleted slot's end is this, so it never passes."""
DELETED = 2
"""Marks a deleted entry's slot (an entry's key is odd: ``hash | 1``)."""
MIN_SLOTS = 16
"""The smallest table (a new store's, empty)."""


def clamp(end: float) -> int:
    """An end (or a horizon) as the table keeps it: a whole second within 32 bits."""
    return min(max(int(end), 0), END_MAX)


def keyed(jtis: Iterable[str]) -> Iterator[int]:
    """The jtis' keys: Python's hash (keyed per process, cached in the str), made odd."""
    return map(or_, map(hash, jtis), repeat(1))


class JtiTable:
    """The arrays; how many slots hold entries (``live``) or entries and deleted marks
    (``used``); entries by end (``counts``), and how many end before ``horizon`` (``passed``)."""

    __slots__ = ("counts", "ends", "horizon", "keys", "live", "mask", "passed", "used")

    def __init__(self, entries: int = 0, horizon: int = 0) -> None:
        wanted = max(MIN_SLOTS, -(-entries * 5 // 3))  # at most 3/5 full once built
        size = 1 << (wanted - 1).bit_length()
        self.keys = array("q", bytes(8 * size))
        self.ends = array("I", b"\xff" * (4 * size))
        self.mask = size - 1
        self.live = self.used = self.passed = 0
        self.counts: dict[int, int] = {}
        self.horizon = horizon

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

    def held(self, key: int) -> bool:
        """Whether ``key`` is an entry not yet passed."""
        i = self.find(key)
        return i >= 0 and self.ends[i] >= self.horizon

    def later(self, i: int, end: int) -> None:
        """Move slot ``i``'s end to ``end`` if that is later (a token revoked again)."""
        before = self.ends[i]
        if end > before:
            self.ends[i] = end
            self._counted(before, -1)
            self._counted(end, 1)

    def _counted(self, end: int, n: int) -> None:
        held = self.counts.get(end, 0) + n
        if held:
            self.counts[end] = held
        else:  # a prune walks the ends held: none left at this one
            del self.counts[end]
        if end < self.horizon:
            self.passed += n

    def put(self, entries: Iterable[tuple[int, int]]) -> None:
        """Add ``(key, end)`` entries, or move a held key's end later. The caller made room."""
        keys, ends, mask = self.keys, self.ends, self.mask
        for key, end in entries:
            i = key & mask
            free = -1
            while (held := keys[i]) != key:
                if not held:
                    break
                if held == DELETED and free < 0:
                    free = i
                i = (i + 1) & mask
            else:
                self.later(i, end)
                continue
            if free >= 0:
                i = free
            else:
                self.used += 1
            ends[i] = end
            keys[i] = key
            self.live += 1
            self._counted(end, 1)

    def fill(self, new: Iterable[int], end: int) -> None:
        """:meth:`put` for keys of one end: the loop of an agent's start (a million keys),
        kept to the least it needs (a table being filled has no deleted slots)."""
        keys, ends, mask = self.keys, self.ends, self.mask
        added = 0
        for key in new:
            i = key & mask
            while held := keys[i]:
                if held == key:
                    self.later(i, end)  # a jti listed twice: the later end
                    break
                i = (i + 1) & mask
            else:
                ends[i] = end
                keys[i] = key
                added += 1
        if added:
            self.live += added
            self.used += added
            self._counted(end, added)

    def advance(self, horizon: int) -> None:
        """Entries ending before ``horizon`` have passed (a prune)."""
        if horizon > self.horizon:
            self.passed += sum(n for end, n in self.counts.items() if self.horizon <= end < horizon)
            self.horizon = horizon

    def entries(self) -> list[tuple[int, int]]:
        """Every entry not passed."""
        horizon = self.horizon
        return [(k, e) for k, e in zip(self.keys, self.ends, strict=True) if k & 1 and e >= horizon]

    def delete_passed(self) -> None:
        """Delete, in place, every entry that ends before the horizon."""
        keys, ends = self.keys, self.ends
        gone = 0
        for i in compress(count(), map(lt, ends, repeat(self.horizon))):
            if keys[i] & 1:  # an entry (an empty or deleted slot's end never passes anyway)
                keys[i] = DELETED
                ends[i] = END_MAX
                gone += 1
        self.live -= gone
        self.passed = 0
        self.counts = {end: n for end, n in self.counts.items() if end >= self.horizon}

    def copy(self) -> JtiTable:
        clone = JtiTable.__new__(JtiTable)
        clone.keys, clone.ends, clone.counts = array("q", self.keys), array("I", self.ends), dict(self.counts)
        clone.mask, clone.live, clone.used = self.mask, self.live, self.used
        clone.passed, clone.horizon = self.passed, self.horizon
        return clone
