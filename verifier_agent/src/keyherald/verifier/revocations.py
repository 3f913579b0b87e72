"""The agent's revoked tokens, compact: about 13 bytes per live revocation, not 400.

A dict of jti strings costs every service that embeds the agent about 400 B per revocation;
at a million, 400 MB. This store keeps 64-bit hashes instead (Python's own ``hash`` of the
jti: keyed per process, computed once per string and cached in it, so an attacker cannot
aim collisions, and the validator's lookup costs no extra hashing):

- a **base**: the hashes sorted in one ``array('Q')``, each one's end (``array('I')``, Unix
  seconds) beside it, a directory of where each top-bits bucket starts (a lookup bisects
  about 32 entries), and how many end at each second (how many have passed, in one bisect);
- a small **overlay** dict for events since, merged into a new base once it holds
  ``max(MERGE_MIN, len(base) // 16)`` entries.

A revocation goes as soon as no token it covers can be valid: the overlay drops it at the
next prune (each heartbeat); the base is rebuilt without its passed entries once they are an
eighth of it, and until then a passed entry can only match a token that has expired anyway.
Readers on other threads see whole objects: a rebuild swaps one tuple.

The hashes mean nothing outside this process: this store cannot be written back as jtis
(the checkpoint and the events it came from can; the cache file keeps those).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from itertools import accumulate, compress, repeat
from operator import add, and_, ge, lshift, or_, rshift
from typing import NamedTuple

from keyherald.shared.revocations import RevokedTokens, TokenSet, next_generation

__all__ = ["MERGE_MIN", "CompactRevocations"]

MERGE_MIN = 4096
"""The overlay is merged into the base once it holds this many (or a sixteenth of the base)."""
_OFFSET = 1 << 63  # hash() is signed 64-bit: shifted, it sorts as an unsigned key
_END_MAX = (1 << 32) - 1
_BUCKET = 32
"""Entries per directory bucket, on average."""


class _Base(NamedTuple):
    keys: array[int]
    """Sorted ``hash(jti) + 2**63``."""
    ends: array[int]
    """``ends[i]``: when ``keys[i]``'s revocation may go."""
    distinct: array[int]
    """The distinct ends, sorted..."""
    before: array[int]
    """... and ``before[i]``: how many entries end before ``distinct[i]`` (one more at the end)."""
    directory: array[int]
    """``directory[b]``: index of the first key whose top bits are ``b`` (one more at the end)."""
    shift: int


def _base(packed: Iterable[int]) -> _Base:
    """A base from ``(key << 32) | end`` values, in any order (sorting is the one cost)."""
    merged = sorted(packed)
    keys = array("Q", map(rshift, merged, repeat(32)))
    ends = array("I", map(and_, merged, repeat(_END_MAX)))
    n = len(keys)
    bits = max(0, (n // _BUCKET).bit_length())
    shift = 64 - bits
    directory = array("q", (bisect_left(keys, b << shift) for b in range(1 << bits)))
    directory.append(n)
    counts = sorted(Counter(ends).items())  # ends span a token lifetime: few distinct seconds
    distinct = array("I", (end for end, _ in counts))
    before = array("q", accumulate((c for _, c in counts), initial=0))
    return _Base(keys, ends, distinct, before, directory, shift)


def _passed(base: _Base, horizon: float) -> int:
    """How many of the base's entries end before ``horizon``."""
    return base.before[bisect_left(base.distinct, horizon)]


_EMPTY = _base(())


def _packed(key: int, end: int) -> int:
    return (key << 32) | min(max(end, 0), _END_MAX)


class CompactRevocations:
    """jti -> end, as :class:`keyherald.shared.revocations.TokenSet` asks, in about 13 B each."""

    __slots__ = ("_horizon", "_parts", "_shadowed", "generation")

    def __init__(self) -> None:
        self._parts: tuple[_Base, dict[int, int]] = (_EMPTY, {})
        self._horizon = 0.0
        self._shadowed: set[int] = set()
        """Overlay keys the base holds too (a token revoked again, later): rare, and counted once."""
        self.generation = next_generation()

    @classmethod
    def from_dict(cls, tokens: dict[str, int]) -> CompactRevocations:
        """Build from a checkpoint's jti -> end (C-level passes: hash, pack, sort, split)."""
        store = cls()
        keys = map(add, map(hash, tokens.keys()), repeat(_OFFSET))
        values = tokens.values()
        in_range = not tokens or (min(values) >= 0 and max(values) <= _END_MAX)
        ends: Iterable[int] = values if in_range else (min(max(e, 0), _END_MAX) for e in values)
        store._parts = (_base(map(or_, map(lshift, keys, repeat(32)), ends)), {})
        return store

    # -- lookups (any thread) --------------------------------------------------------------

    def __contains__(self, jti: object) -> bool:
        base, recent = self._parts
        key = hash(jti) + _OFFSET
        if key in recent:
            return True
        keys, directory = base.keys, base.directory
        bucket = key >> base.shift
        hi = directory[bucket + 1]
        i = bisect_left(keys, key, directory[bucket], hi)
        return i < hi and keys[i] == key

    def _find(self, key: int) -> int | None:
        base, recent = self._parts
        end = recent.get(key)
        if end is not None:
            return end
        keys, directory = base.keys, base.directory
        bucket = key >> base.shift
        hi = directory[bucket + 1]
        i = bisect_left(keys, key, directory[bucket], hi)
        return base.ends[i] if i < hi and keys[i] == key else None

    def get(self, jti: str, default: int = 0) -> int:
        end = self._find(hash(jti) + _OFFSET)
        return default if end is None else end

    def __len__(self) -> int:
        """Live revocations: the base's not yet passed, plus the overlay's new ones."""
        base, recent = self._parts
        horizon = self._horizon
        passed = _passed(base, horizon)
        twins = sum(1 for k in self._shadowed if (self._in_base(base, k) or 0) >= horizon) if self._shadowed else 0
        return len(base.keys) - passed + len(recent) - twins

    def __bool__(self) -> bool:
        return len(self) > 0

    @property
    def held(self) -> int:
        """Entries in memory, passed ones not yet rebuilt away included."""
        base, recent = self._parts
        return len(base.keys) + len(recent)

    # -- changes (the follower only) --------------------------------------------------------

    def revoke(self, jti: str, expires_at: int) -> None:
        self._add(hash(jti) + _OFFSET, expires_at)
        self._maybe_merge()
        self.generation = next_generation()

    def revoke_many(self, tokens: Iterable[tuple[str, int]]) -> None:
        for jti, expires_at in tokens:
            self._add(hash(jti) + _OFFSET, expires_at)
        self._maybe_merge()
        self.generation = next_generation()

    def _add(self, key: int, end: int) -> None:
        base, recent = self._parts
        held = recent.get(key)
        if held is not None:
            if end > held:
                recent[key] = end
            return
        in_base = self._in_base(base, key)
        if in_base is not None and in_base >= end:
            return
        recent[key] = end
        if in_base is not None:
            self._shadowed.add(key)

    @staticmethod
    def _in_base(base: _Base, key: int) -> int | None:
        keys, directory = base.keys, base.directory
        bucket = key >> base.shift
        hi = directory[bucket + 1]
        i = bisect_left(keys, key, directory[bucket], hi)
        return base.ends[i] if i < hi and keys[i] == key else None

    def _maybe_merge(self) -> None:
        base, recent = self._parts
        if len(recent) >= max(MERGE_MIN, len(base.keys) // 16):
            self._rebuild()

    def _rebuild(self) -> None:
        """A new base: the old one without passed entries (nor those the overlay supersedes),
        plus the overlay; swapped in whole."""
        base, recent = self._parts
        horizon = int(self._horizon)
        keep = map(ge, base.ends, repeat(horizon))
        old: Iterable[int] = compress(map(or_, map(lshift, base.keys, repeat(32)), base.ends), keep)
        if self._shadowed:
            old = (p for p in old if (p >> 32) not in recent)
        new = (_packed(k, e) for k, e in recent.items() if e >= horizon)
        self._parts = (_base([*old, *new]), {})
        self._shadowed = set()

    def prune(self, horizon: float) -> None:
        self._horizon = max(self._horizon, horizon)
        base, recent = self._parts
        gone = [k for k, end in recent.items() if end < horizon] if recent else []
        for key in gone:
            del recent[key]
            self._shadowed.discard(key)
        passed = _passed(base, self._horizon)
        if passed and passed * 8 >= len(base.keys):
            self._rebuild()

    def absorb(self, other: TokenSet, horizon: float) -> None:
        if isinstance(other, CompactRevocations):
            obase, orecent = other._parts
            live = compress(zip(obase.keys, obase.ends, strict=True), map(ge, obase.ends, repeat(horizon)))
            for key, end in [*live, *((k, e) for k, e in orecent.items() if e >= horizon)]:
                self._add(key, end)
        elif isinstance(other, RevokedTokens):
            for jti, end in other.items():
                if end >= horizon:
                    self._add(hash(jti) + _OFFSET, end)
        else:
            raise TypeError(f"cannot absorb a {type(other).__name__}")
        self._maybe_merge()
        self.generation = next_generation()

    def beyond(self, other: TokenSet) -> CompactRevocations:
        """What ``self`` holds that ``other`` lacks (or ends earlier): rare (a new log), O(n)."""
        base, recent = self._parts
        extra = CompactRevocations()
        find = other._find if isinstance(other, CompactRevocations) else None
        if find is None:
            raise TypeError("a compact store compares with another compact store only")
        live = compress(zip(base.keys, base.ends, strict=True), map(ge, base.ends, repeat(int(self._horizon))))
        missing = [(k, e) for k, e in [*live, *recent.items()] if (find(k) or 0) < e]
        extra._parts = (_base(_packed(k, e) for k, e in missing), {})
        extra._horizon = self._horizon
        return extra

    def copy(self) -> CompactRevocations:
        """Shares the base (never changed in place); the overlay is copied."""
        clone = CompactRevocations()
        base, recent = self._parts
        clone._parts = (base, dict(recent))
        clone._horizon, clone._shadowed = self._horizon, set(self._shadowed)
        return clone

    def __repr__(self) -> str:
        return f"CompactRevocations({len(self)} live)"
