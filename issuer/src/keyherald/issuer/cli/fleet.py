"""``keyherald fleet``: every live agent, where it stands against the head of the log, and
the agents gone silent. Exit 1 when a live agent is stale or further behind than --max-lag,
so that the command serves as a check in scripts."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ._common import add_parser, add_settings_flags, emit_json, opened_context

if TYPE_CHECKING:
    from ..fleet import AgentView, FleetView

__all__ = ["register"]


def register(sub: Any) -> None:
    fleet = add_parser(sub, "fleet", "the agents following the log: seq, lag, stale, refused events, last seen")
    fleet.add_argument("--json", action="store_true", help="print the view as JSON")
    fleet.add_argument("--max-lag", type=int, metavar="EVENTS",
                       help="exit 1 when a live agent is more than this many events behind the head")
    add_settings_flags(fleet)
    fleet.set_defaults(handler=_fleet)


def _ago(seconds: float) -> str:
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _row(agent: AgentView) -> list[str]:
    record = agent.record
    lag = "other log" if agent.lag_events is None else str(agent.lag_events)
    return [
        record.agent_id, ",".join(record.audience), str(record.seq), lag, f"{agent.lag_seconds:.1f}s",
        "yes" if record.connected else "no", "STALE" if record.stale else "no", str(record.refused_events),
        _ago(agent.age),
    ]


def render(view: FleetView) -> str:
    head = ["AGENT", "AUDIENCE", "SEQ", "LAG", "BEHIND", "CONNECTED", "STALE", "REFUSED", "SEEN"]
    lines = [f"log {view.head.log} at seq {view.head.seq}: {len(view.live)} live agent(s)"
             + (f", {len(view.lost)} lost" if view.lost else "")
             + (f", {view.unseen} connected without presence" if view.unseen else "")]
    for title, agents in (("", view.live), ("lost (silent for more than 3 presence intervals):", view.lost)):
        if not agents:
            continue
        if title:
            lines.append(title)
        rows = [head, *(_row(a) for a in agents)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines.extend("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
    return "\n".join(lines)


async def _fleet(args: argparse.Namespace) -> int:
    from ..fleet import read_fleet

    async with opened_context(args) as ctx:
        state = await ctx.log.sync()
        view = await read_fleet(ctx.redis, ctx.names, state.position)
    unhealthy = [a for a in view.live if a.record.stale or (
        args.max_lag is not None and (a.lag_events is None or a.lag_events > args.max_lag))]
    if args.json:
        emit_json({**view.as_dict(), "ok": not unhealthy})
    else:
        print(render(view))
    return 1 if unhealthy else 0
