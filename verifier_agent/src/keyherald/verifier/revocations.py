"""The agent's revoked tokens, compact: about 13 bytes per live revocation, not 400.

A dict of jti strings costs every service that embeds the agent about 400 B per revocation;
at a million, 400 MB. This store keeps 64-bit hashes instead (Python's own ``hash`` of the
jti: keyed per process, computed once per string and cached in it, so an attacker cannot
aim collisions, and the validator's lookup costs no extra hashing):

- a **base**: the hashes sorted in one ``array('Q')``, each one's end (``array('I')``, Unix
  seconds) beside it, a directory of where each top-bits bucket starts (a lookup bisects
  about 32 entries), and how many end at each second (how many have passed, in one bisect);
- a small **overlay** dict, jti -> end, for events since, merged into a new base once it
  holds ``max(MERGE_MIN, len(base) // 16)`` entries. While the base is empty (a few thousand
  revocations) the overlay is the whole store, and a lookup costs what a dict's does: the
  validator reads :attr:`CompactRevocations.view` and asks the base only when it holds any.

A revocation goes as soon as no token it covers can be valid: the overlay drops it at the
next prune (each heartbeat); the base is rebuilt without its passed entries once they are an
eighth of it, and until then a passed entry can only match a token that has expired anyway.
Readers on other threads see whole objects: a rebuild swaps one tuple (an overlay is never
written again once merged, so a reader holding the old pair still finds everything).

The hashes mean nothing outside this process: this store cannot be written back as jtis
(the checkpoint and the events it came from can; the cache file keeps those).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import accumulate, compress, islice, repeat
from operator import add, and_, eq, ge, lshift, or_, rshift
from typing import NamedTuple

from keyherald.shared.revocations import RevokedTokens, TokenGroups, TokenSet, next_generation

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
    """A base from ``(key << 32) | end`` values, in any order (sorting is the one cost). A
    key given twice (stores that overlap, a jti listed twice) keeps its latest end."""
    merged = sorted(packed)
    keys = array("Q", map(rshift, merged, repeat(32)))
    ends = array("I", map(and_, merged, repeat(_END_MAX)))
    if any(map(eq, keys, islice(keys, 1, None))):  # rare: one C pass tells
        latest = dict(zip(keys, ends, strict=True))  # sorted by (key, end): the last end wins
        keys, ends = array("Q", latest.keys()), array("I", latest.values())
    return _indexed(keys, ends)


def _indexed(keys: array[int], ends: array[int]) -> _Base:
    """The directory and the count of ends, for sorted distinct ``keys`` and their ``ends``."""
    n = len(keys)
    bits = max(0, (n // _BUCKET).bit_length())
    shift = 64 - bits
    directory = array("q", (bisect_left(keys, b << shift) for b in range(1 << bits)))
    directory.append(n)
    counts = sorted(Counter(ends).items())  # ends span a token lifetime: few distinct seconds
    distinct = array("I", (end for end, _ in counts))
    before = array("q", accumulate((c for _, c in counts), initial=0))
    return _Base(keys, ends, distinct, before, directory, shift)


def _merged(base: _Base, horizon: int, adds: list[tuple[int, int]]) -> _Base:
    """``base`` without entries ending before ``horizon``, with ``adds`` (sorted, distinct
    keys) merged in: a key in both keeps the later end."""
    keys, ends = base.keys, base.ends
    if _passed(base, horizon):
        live = list(map(ge, ends, repeat(horizon)))
        keys, ends = array("Q", compress(keys, live)), array("I", compress(ends, live))
    new_keys, new_ends = array("Q"), array("I")
    start, n = 0, len(keys)
    for key, end in adds:
        i = bisect_left(keys, key, start)
        new_keys.extend(keys[start:i])
        new_ends.extend(ends[start:i])
        if i < n and keys[i] == key:
            end = max(end, ends[i])
            i += 1
        new_keys.append(key)
        new_ends.append(end)
        start = i
    new_keys.extend(keys[start:])
    new_ends.extend(ends[start:])
    return _indexed(new_keys, new_ends)


def _passed(base: _Base, horizon: float) -> int:
    """How many of the base's entries end before ``horizon``."""
    return base.before[bisect_left(base.distinct, horizon)]


_EMPTY = _base(())


def _clamp(end: int) -> int:
    return min(max(end, 0), _END_MAX)


def _in(base: _Base, key: int) -> int | None:
    """The end of ``key`` in ``base``, or None."""
    keys, directory = base.keys, base.directory
    bucket = key >> base.shift
    hi = directory[bucket + 1]
    i = bisect_left(keys, key, directory[bucket], hi)
    return base.ends[i] if i < hi and keys[i] == key else None


class CompactRevocations:
    """jti -> end, as :class:`keyherald.shared.revocations.TokenSet` asks, in about 13 B each."""

    __slots__ = ("_horizon", "_parts", "_shadowed", "generation", "view")

    def __init__(self) -> None:
        self._parts: tuple[_Base, dict[str, int]] = (_EMPTY, {})
        self.view: tuple[dict[str, int], bool] = ({}, False)
        """(overlay, the base holds anything): a jti in the overlay is revoked; one that is not
        needs a base lookup (``in``) only when the flag says so."""
        self._horizon = 0.0
        self._shadowed: set[str] = set()
        """Overlay jtis the base holds too (a token revoked again, later): rare, counted once."""
        self.generation = next_generation()

    def _swap(self, base: _Base, recent: dict[str, int]) -> None:
        self._parts = (base, recent)
        self.view = (recent, len(base.keys) > 0)

    @classmethod
    def from_groups(cls, groups: TokenGroups) -> CompactRevocations:
        """Build from a checkpoint's groups: per group, C-level passes (hash, pack); one sort."""
        packed: list[int] = []
        for end, jtis in groups:
            keys = map(add, map(hash, jtis), repeat(_OFFSET))
            packed.extend(map(or_, map(lshift, keys, repeat(32)), repeat(_clamp(end))))
        store = cls()
        store._swap(_base(packed), {})
        return store

    # -- lookups (any thread) --------------------------------------------------------------

    def __contains__(self, jti: object) -> bool:
        base, recent = self._parts
        if jti in recent:
            return True
        keys = base.keys
        if not keys:
            return False
        key = hash(jti) + _OFFSET  # _in, inlined: this is the validator's lookup
        directory = base.directory
        bucket = key >> base.shift
        hi = directory[bucket + 1]
        i = bisect_left(keys, key, directory[bucket], hi)
        return i < hi and keys[i] == key

    def get(self, jti: str, default: int = 0) -> int:
        base, recent = self._parts
        end = recent.get(jti)
        if end is None:
            end = _in(base, hash(jti) + _OFFSET)
        return default if end is None else end

    def _key_lookup(self) -> Callable[[int], int]:
        """key -> its end (0: absent), the overlay's jtis hashed once (for :meth:`beyond`)."""
        base, recent = self._parts
        hashed = {hash(jti) + _OFFSET: end for jti, end in recent.items()}

        def find(key: int) -> int:
            return max(_in(base, key) or 0, hashed.get(key, 0))

        return find

    def __len__(self) -> int:
        """Live revocations: the base's not yet passed, plus the overlay's new ones."""
        base, recent = self._parts
        horizon = self._horizon
        twins = sum(1 for j in self._shadowed if (_in(base, hash(j) + _OFFSET) or 0) >= horizon)
        return len(base.keys) - _passed(base, horizon) + len(recent) - twins

    def __bool__(self) -> bool:
        return len(self) > 0

    @property
    def held(self) -> int:
        """Entries in memory, passed ones not yet rebuilt away included."""
        base, recent = self._parts
        return len(base.keys) + len(recent)

    # -- changes (the follower only) --------------------------------------------------------

    def revoke(self, jti: str, expires_at: int) -> None:
        self._add(jti, expires_at)
        self._maybe_merge()
        self.generation = next_generation()

    def revoke_many(self, tokens: Iterable[tuple[str, int]]) -> None:
        for jti, expires_at in tokens:
            self._add(jti, expires_at)
        self._maybe_merge()
        self.generation = next_generation()

    def _add(self, jti: str, end: int) -> None:
        base, recent = self._parts
        end = _clamp(end)
        held = recent.get(jti)
        if held is not None:
            if end > held:
                recent[jti] = end
            return
        in_base = _in(base, hash(jti) + _OFFSET) if base.keys else None
        if in_base is not None and in_base >= end:
            return
        recent[jti] = end
        if in_base is not None:
            self._shadowed.add(jti)

    def _maybe_merge(self) -> None:
        base, recent = self._parts
        if len(recent) >= max(MERGE_MIN, len(base.keys) // 16):
            self._rebuild()

    def _live_packed(self) -> list[int]:
        """Every entry not passed, as ``(key << 32) | end`` (overlay jtis hashed)."""
        base, recent = self._parts
        horizon = int(self._horizon)
        keep = map(ge, base.ends, repeat(horizon))
        old = compress(map(or_, map(lshift, base.keys, repeat(32)), base.ends), keep)
        new = (((hash(j) + _OFFSET) << 32) | e for j, e in recent.items() if e >= horizon)
        return [*old, *new]

    def _rebuild(self, extra: Iterable[int] = ()) -> None:
        """A new base: the old one without passed entries, plus the overlay (and ``extra``);
        swapped in whole. A token in both keeps its latest end.

        The follower runs on the embedding service's loop, so this is kept short: while what
        is added is small beside the base, the base is filtered and the additions merged in
        by slices (no repacking, no sort of the whole); otherwise everything is sorted anew."""
        base, recent = self._parts
        horizon = int(self._horizon)
        extra = list(extra)
        adds: dict[int, int] = {}
        for key, end in [*((hash(j) + _OFFSET, e) for j, e in recent.items()), *((p >> 32, p & _END_MAX)
                                                                               for p in extra)]:
            if end >= horizon and end > adds.get(key, -1):
                adds[key] = end
        if len(adds) * 4 > len(base.keys):
            self._swap(_base([*self._live_packed(), *extra]), {})
        else:
            self._swap(_merged(base, horizon, sorted(adds.items())), {})
        self._shadowed = set()

    def prune(self, horizon: float) -> None:
        self._horizon = max(self._horizon, horizon)
        base, recent = self._parts
        gone = [j for j, end in recent.items() if end < horizon] if recent else []
        for jti in gone:
            del recent[jti]
            self._shadowed.discard(jti)
        passed = _passed(base, self._horizon)
        if passed and passed * 8 >= len(base.keys):
            self._rebuild()

    def absorb(self, other: TokenSet, horizon: float) -> None:
        if isinstance(other, CompactRevocations):
            live = [p for p in other._live_packed() if (p & _END_MAX) >= horizon]
            if live:
                self._rebuild(live)
        elif isinstance(other, RevokedTokens):
            for jti, end in other.items():
                if end >= horizon:
                    self._add(jti, end)
            self._maybe_merge()
        else:
            raise TypeError(f"cannot absorb a {type(other).__name__}")
        self.generation = next_generation()

    def beyond(self, other: TokenSet) -> CompactRevocations:
        """What ``self`` holds that ``other`` lacks (or ends earlier): rare (a new log), O(n)."""
        if not isinstance(other, CompactRevocations):
            raise TypeError("a compact store compares with another compact store only")
        find = other._key_lookup()
        missing = [p for p in self._live_packed() if find(p >> 32) < (p & _END_MAX)]
        extra = CompactRevocations()
        extra._swap(_base(missing), {})
        extra._horizon = self._horizon
        return extra

    def copy(self) -> CompactRevocations:
        """Shares the base (never changed in place); the overlay is copied."""
        clone = CompactRevocations()
        base, recent = self._parts
        clone._swap(base, dict(recent))
        clone._horizon, clone._shadowed = self._horizon, set(self._shadowed)
        return clone

    def __repr__(self) -> str:
        return f"CompactRevocations({len(self)} live)"
