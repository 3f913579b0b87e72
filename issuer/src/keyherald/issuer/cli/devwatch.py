"""What ``keyherald dev`` shows while it runs: each event as it is appended, and how many
agents are live when that changes. Rich on a terminal, plain lines when piped.

It reads the log as any reader would (verified with the anchor), from the stream; heartbeats
are left out (one every few seconds would drown the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from keyherald.shared.errors import ProtocolError
from keyherald.shared.events import Event, EventType

if TYPE_CHECKING:
    from ..runtime import IssuerRuntime

__all__ = ["describe", "watch"]

_STYLES = {"token.revoked": "red", "subject.revoked": "red", "key.revoked": "bold red", "key.activated": "green",
           "key.published": "cyan", "log.started": "yellow", "client.updated": "magenta"}


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


class _Out:
    def __init__(self) -> None:
        self._console: Any = None
        if sys.stdout.isatty():
            from rich.console import Console

            self._console = Console(highlight=False)

    def event(self, event: Event) -> None:
        when = datetime.fromtimestamp(event.time).strftime("%H:%M:%S")
        what = describe(event)
        if self._console is not None:
            style = _STYLES.get(event.type, "white")
            self._console.print(f"[dim]{when}[/dim]  seq {event.seq:<6} [{style}]{event.type:<16}[/{style}] {what}")
        else:
            print(f"{when}  seq {event.seq:<6} {event.type:<16} {what}", flush=True)

    def note(self, text: str) -> None:
        if self._console is not None:
            self._console.print(f"[bold]{text}[/bold]")
        else:
            print(text, flush=True)


async def watch(runtime: IssuerRuntime, *, every: float = 0.2) -> None:
    """Until cancelled: print new events, and the live agent count when it changes."""
    out = _Out()
    ctx = runtime.ctx
    anchor, issuer, names = ctx.control.anchor, ctx.settings.issuer, ctx.names
    last = (await ctx.log.sync()).seq
    agents: int | None = None
    ticks = 0
    me = asyncio.current_task()
    while True:
        await asyncio.sleep(every)
        if me is not None and me.cancelling():  # redis-py may turn a cancel mid-read into an error
            raise asyncio.CancelledError
        with contextlib.suppress(RedisError, OSError, UnicodeDecodeError):
            entries = await ctx.redis.xrange(names.events, min=f"({last}-0", max="+") or []
            for raw_id, fields in entries:
                with contextlib.suppress(ProtocolError, ValueError):
                    event = anchor.open_event(str((fields or {}).get("event")), issuer=issuer)
                    if event.type != EventType.HEARTBEAT:
                        out.event(event)
                last = max(last, int(str(raw_id).split("-", 1)[0]))
            ticks += 1
        if me is not None and me.cancelling():
            raise asyncio.CancelledError
        if ticks % 10 == 0:
            fleet = runtime.fleet
            live = len(fleet.live) if fleet is not None else 0
            if live != agents:
                if agents is not None or live:
                    out.note(f"live agents: {live}")
                agents = live
