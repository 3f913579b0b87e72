"""The keys as a timeline: pure functions of (key records, now), no I/O.

Each key is one row: published (announced, verifies, does not sign yet), active (signs),
retired (verifies only) or revoked, until it expires. Positions are in per-mille of the
window shown, drawn as SVG rectangles (attributes, not inline styles: the console's CSP
forbids those).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keyherald.shared.events import KeyRecord, KeyState
from keyherald.shared.state import State

from ...lifecycle import standby

__all__ = ["KeyRow", "Segment", "Timeline", "timeline"]

WIDTH = 1000


@dataclass(frozen=True)
class Segment:
    phase: str
    """published | active | planned (a standby, once it signs) | retired | revoked"""
    x: int
    width: int


@dataclass(frozen=True)
class KeyRow:
    kid: str
    alg: str
    state: str
    published_at: int
    active_from: int | None
    active_planned: bool
    """``active_from`` is when it is planned to sign (a standby), not when it did."""
    ended_at: int | None
    """When it stopped signing: retired or revoked."""
    expires_at: int | None
    signing: bool
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Timeline:
    rows: tuple[KeyRow, ...]
    start: float
    end: float
    now_x: int
    signing: KeyRow | None
    standby: KeyRow | None
    next_rotation: float | None
    """Seconds until the standby takes over (None: no standby)."""
    expired: tuple[tuple[str, float], ...]
    """Keys dropped recently (kid, when), from the log's ``key.expired`` events."""


def _window(keys: Sequence[KeyRecord], now: float) -> tuple[float, float]:
    times = [float(now)]
    for k in keys:
        times.extend(float(t) for t in (k.published_at, k.activates_at, k.expires_at) if t is not None)
    start, end = min(times), max(times)
    span = max(end - start, 60.0)
    return start - span * 0.02, end + span * 0.06


def _segments(key: KeyRecord, next_at: int | None, start: float, end: float) -> tuple[Segment, ...]:
    def x(t: float) -> int:
        return round((min(max(t, start), end) - start) / (end - start) * WIDTH)

    spans: list[tuple[str, float, float]] = []
    signed_from = key.activated_at
    if key.state is KeyState.PUBLISHED:
        planned = key.activates_at if key.activates_at is not None else end
        spans.append(("published", key.published_at, planned))
        spans.append(("planned", planned, end))
    else:
        spans.append(("published", key.published_at, signed_from if signed_from is not None else key.published_at))
        stopped = key.retired_at if key.retired_at is not None else key.revoked_at
        if signed_from is not None:  # a signing key: until the planned rotation (``now`` is marked)
            spans.append(("active", signed_from, stopped if stopped is not None else (next_at or end)))
        if key.state is KeyState.RETIRED and key.retired_at is not None:
            spans.append(("retired", key.retired_at, key.expires_at or end))
        if key.state is KeyState.REVOKED and key.revoked_at is not None:
            spans.append(("revoked", key.revoked_at, key.expires_at or end))
    found = []
    for phase, a, b in spans:
        left, right = x(a), x(b)
        if right > left or phase in ("active", "revoked"):
            found.append(Segment(phase, left, max(right - left, 3)))
    return tuple(found)


def timeline(state: State, now: float, expired: Sequence[tuple[str, float]] = ()) -> Timeline:
    """Every key ``state`` holds, newest first, on one time axis with ``now`` marked."""
    keys = list(state.keys.values())
    start, end = _window(keys, now)
    nxt = standby(state)
    signing_kid = state.active_key.kid if state.active_key is not None else None
    next_at = nxt.activates_at if nxt is not None else None
    rows = []
    for key in sorted(keys, key=lambda k: (k.published_at, k.kid), reverse=True):
        planned = key.state is KeyState.PUBLISHED
        rows.append(KeyRow(
            kid=key.kid, alg=str(key.alg), state=key.state.value, published_at=key.published_at,
            active_from=key.activates_at if planned else key.activated_at, active_planned=planned,
            ended_at=key.retired_at if key.retired_at is not None else key.revoked_at, expires_at=key.expires_at,
            signing=key.kid == signing_kid, segments=_segments(key, next_at, start, end),
        ))
    by_kid = {r.kid: r for r in rows}
    now_x = round((now - start) / (end - start) * WIDTH)
    return Timeline(
        rows=tuple(rows), start=start, end=end, now_x=now_x,
        signing=by_kid.get(signing_kid) if signing_kid else None,
        standby=by_kid.get(nxt.kid) if nxt is not None else None,
        next_rotation=max(0.0, next_at - now) if next_at is not None else None,
        expired=tuple(expired),
    )
