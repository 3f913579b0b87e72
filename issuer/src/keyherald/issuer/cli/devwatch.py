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

from keyherald.shared.events import Event, EventType

from ..eventfeed import describe, open_entries

if TYPE_CHECKING:
    from ..runtime import IssuerRuntime

__all__ = ["describe", "watch"]

_STYLES = {"token.revoked": "red", "subject.revoked": "red", "key.revoked": "bold red", "key.activated": "green",
           "key.published": "cyan", "log.started": "yellow", "client.updated": "magenta"}


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
    names = ctx.names
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
            for seq, event in open_entries(ctx, entries):
                if event is not None and event.type != EventType.HEARTBEAT:
                    out.event(event)
                last = max(last, seq)
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
