"""The log's events as tools show them to people: opened from the stream, described in a few words.

For showing history only (``keyherald dev``'s feed, the console's events, the time of an event
an operator waits for): each entry is opened with the current anchor or one an anchor rotation
replaced, never trusted to extend a chain; following the log is :mod:`.logreader`'s job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from keyherald.shared.anchorchain import open_event_by_any
from keyherald.shared.errors import ProtocolError
from keyherald.shared.events import Event, EventType

from .context import IssuerContext

__all__ = ["describe", "event_time", "open_entries", "recent"]


def describe(event: Event) -> str:
    """What an event concerns, in a few words (a jti only by its first characters)."""
    data = event.data
    kind = event.type
    if kind.startswith("key.") and kind != EventType.KEY_EXPIRED:
        key = data.get("key") or {}
        return f"kid {str(key.get('kid', ''))[:12]}… ({key.get('alg', '')})"
    if kind == EventType.KEY_EXPIRED:
        return f"kid {str(data.get('kid', ''))[:12]}…"
    if kind == EventType.TOKEN_REVOKED:
        return f"jti {str(data.get('jti', ''))[:8]}…"
    if kind == EventType.SUBJECT_REVOKED:
        return f"subject {data.get('sub', '')}"
    if kind == EventType.CLIENT_UPDATED:
        return f"client {data.get('client_id', '')}{' (deleted)' if data.get('record') is None else ''}"
    if kind == EventType.POLICY:
        return f"max token lifetime {data.get('max_token_ttl')}s, heartbeat {data.get('heartbeat_interval')}s"
    if kind == EventType.LOG_STARTED:
        previous = data.get("previous") or {}
        after = f" after log {str(previous.get('log', ''))[:8]} seq {previous.get('seq')}" if previous else ""
        return f"log {event.log[:8]} ({data.get('reason')}){after}"
    return ""


def open_entries(ctx: IssuerContext, entries: Iterable[tuple[Any, Any]]) -> Iterator[tuple[int, Event | None]]:
    """Each stream entry's seq (from its id) and its event, None when it does not open: junk,
    a forgery, another issuer's."""
    chain = ctx.log.state.anchors if ctx.log.state is not None else []
    for raw_id, fields in entries:
        ident = raw_id.decode("ascii", "replace") if isinstance(raw_id, bytes) else str(raw_id)
        try:
            seq = int(ident.split("-", 1)[0])
        except ValueError:
            continue
        event: Event | None = None
        with contextlib.suppress(ProtocolError, ValueError):
            event = open_event_by_any(ctx.control.anchor, chain, str((fields or {}).get("event")),
                                      issuer=ctx.settings.issuer)
        yield seq, event


async def recent(ctx: IssuerContext, count: int) -> list[Event]:
    """The newest ``count`` entries of the stream that open as events, newest first."""
    entries = await ctx.redis.xrevrange(ctx.names.events, count=count) or []
    return [event for _, event in open_entries(ctx, entries) if event is not None]


async def event_time(ctx: IssuerContext, seq: int) -> float:
    """The issuer time of event ``seq`` while the stream still holds it (else 0: any later log
    counts as holding it)."""
    entries = await ctx.redis.xrange(ctx.names.events, min=f"{seq}-0", max=f"{seq}-0") or []
    for _, event in open_entries(ctx, entries):
        if event is not None:
            return event.time
    return 0.0
