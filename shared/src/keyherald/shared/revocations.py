"""Revoked tokens as the fold holds them: jti -> the time after which no token it names can
be valid, with an index by that time so that pruning costs what it drops, not what it keeps.

The issuer folds every event into one of these (a heartbeat prunes: with a plain scan, each
would cost a pass over every live revocation). Agents hold a compact store instead
(``keyherald.verifier.revocations``) that answers the same questions; :class:`TokenSet` is
what the fold asks of either.

A checkpoint writes them grouped by end (:data:`TokenGroups`, protocol 2.3): a million
revocations parse in a tenth of a second as a few thousand lists of strings, where the
jti -> end object of 2.2 took over a second of JSON object building.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import ItemsView, Iterable, Iterator
from typing import Protocol, runtime_checkable

__all__ = ["RevokedTokens", "TokenGroups", "TokenSet", "group_items", "grouped", "next_generation", "read_groups"]

_generations = itertools.count(1)

TokenGroups = list[tuple[int, list[str]]]
"""A checkpoint's revoked tokens: ``(end, [jti, ...])`` pairs. Written with ends ascending,
jtis sorted within a group and each jti once; a reader depends on none of that (a jti found
twice keeps its later end, as the fold would)."""


def grouped(items: Iterable[tuple[str, int]]) -> TokenGroups:
    """jti -> end pairs (each jti once) in the canonical form a checkpoint writes."""
    by_end: dict[int, list[str]] = {}
    for jti, end in items:
        jtis = by_end.get(end)
        if jtis is None:
            by_end[end] = [jti]
        else:
            jtis.append(jti)
    return [(end, sorted(by_end[end])) for end in sorted(by_end)]


def group_items(groups: TokenGroups) -> Iterator[tuple[str, int]]:
    """The groups' jti -> end pairs."""
    for end, jtis in groups:
        yield from zip(jtis, itertools.repeat(end))


def read_groups(value: object) -> TokenGroups:
    """A checkpoint's ``revoked_tokens`` in either form: 2.3's groups, or 2.2's object
    jti -> end. Checked in C-level passes over the jtis (a million, at scale); ValueError
    for anything else (a bool is no end, a number no jti)."""
    if type(value) is dict:
        if not set(map(type, value.values())) <= {int}:
            raise ValueError("revoked_tokens is not an object of integers")
        return grouped(value.items())
    if type(value) is not list:
        raise ValueError("revoked_tokens is neither groups nor an object")
    groups: TokenGroups = []
    for group in value:
        if type(group) is not list or len(group) != 2:
            raise ValueError("a revoked_tokens group is not [end, [jti, ...]]")
        end, jtis = group
        if type(end) is not int or type(jtis) is not list or not jtis or not set(map(type, jtis)) <= {str}:
            raise ValueError("a revoked_tokens group is not [end, [jti, ...]]")
        groups.append((end, jtis))
    return groups


def next_generation() -> int:
    """A number no store of this process had before: a reader that saw a store at generation
    ``g`` knows nothing was revoked since if the store it reads now is still at ``g``."""
    return next(_generations)


@runtime_checkable
class TokenSet(Protocol):
    """What the state fold needs of revoked tokens (both sides' stores implement it)."""

    generation: int
    """Changes whenever a token is added (a cached verdict "not revoked" is good until then)."""

    @property
    def view(self) -> tuple[dict[str, int], bool]:
        """(jti -> end held as a dict, whether more must be asked of ``in``): what a hot path
        reads to look a jti up at dict speed when it can."""

    def __contains__(self, jti: object) -> bool: ...

    def __len__(self) -> int: ...

    def get(self, jti: str, default: int = 0) -> int: ...

    def revoke(self, jti: str, expires_at: int) -> None:
        """Add ``jti``, or move its end later (never earlier)."""

    def revoke_many(self, tokens: Iterable[tuple[str, int]]) -> None: ...

    def prune(self, horizon: float) -> None:
        """Drop what ends before ``horizon``: no token it covers can be valid any more."""

    def absorb(self, other: TokenSet, horizon: float) -> None:
        """Take ``other``'s entries that end at or after ``horizon`` (later ends win)."""

    def beyond(self, other: TokenSet) -> TokenSet:
        """The entries ``other`` lacks, or holds with an earlier end, as a new set."""

    def copy(self) -> TokenSet: ...


class RevokedTokens:
    """A dict jti -> end, plus a heap of ends: :meth:`prune` pops only what it drops."""

    __slots__ = ("_by_end", "_ends", "_indexed", "_map", "generation")

    def __init__(self, items: Iterable[tuple[str, int]] = ()) -> None:
        self._map: dict[str, int] = {}
        self._ends: list[int] = []
        self._by_end: dict[int, list[str]] = {}
        self._indexed = True
        """False for a copy until it changes: copying (a checkpoint's, a reader's) costs one
        dict copy, and a copy that stays read-only never builds its index."""
        self.generation = next_generation()
        self.revoke_many(items)

    def _index(self) -> None:
        if not self._indexed:
            self._indexed = True
            held, self._map, self._ends, self._by_end = self._map, {}, [], {}
            self.revoke_many(held.items())

    @classmethod
    def from_groups(cls, groups: TokenGroups) -> RevokedTokens:
        return cls(group_items(groups))

    def __contains__(self, jti: object) -> bool:
        return jti in self._map

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __getitem__(self, jti: str) -> int:
        return self._map[jti]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RevokedTokens):
            return self._map == other._map
        return self._map == other if isinstance(other, dict) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RevokedTokens({self._map!r})"

    def get(self, jti: str, default: int = 0) -> int:
        return self._map.get(jti, default)

    @property
    def view(self) -> tuple[dict[str, int], bool]:
        return self._map, False

    def items(self) -> ItemsView[str, int]:
        return self._map.items()

    def revoke(self, jti: str, expires_at: int) -> None:
        if not self._indexed:
            self._index()
        held = self._map.get(jti)
        if held is not None and held >= expires_at:
            return
        self._map[jti] = expires_at
        bucket = self._by_end.get(expires_at)
        if bucket is None:
            self._by_end[expires_at] = bucket = []
            heapq.heappush(self._ends, expires_at)
        bucket.append(jti)
        self.generation = next_generation()

    def revoke_many(self, tokens: Iterable[tuple[str, int]]) -> None:
        for jti, expires_at in tokens:
            self.revoke(jti, expires_at)

    def prune(self, horizon: float) -> None:
        self._index()
        ends, by_end, held = self._ends, self._by_end, self._map
        while ends and ends[0] < horizon:
            end = heapq.heappop(ends)
            for jti in by_end.pop(end, ()):
                if held.get(jti) == end:  # not moved later since
                    del held[jti]

    def clear(self) -> None:
        self._map, self._ends, self._by_end, self._indexed = {}, [], {}, True
        self.generation = next_generation()

    def absorb(self, other: TokenSet, horizon: float) -> None:
        if not isinstance(other, RevokedTokens):
            raise TypeError("a compact store's hashes cannot be written back as jtis")
        self.revoke_many((jti, end) for jti, end in other.items() if end >= horizon)

    def beyond(self, other: TokenSet) -> RevokedTokens:
        return RevokedTokens((jti, end) for jti, end in self.items() if other.get(jti, 0) < end)

    def copy(self) -> RevokedTokens:
        clone = RevokedTokens()
        clone._map = dict(self._map)
        clone._indexed = False
        return clone
