"""``--wait``: after publishing, watch the fleet until every live agent holds the event.

Waiting only watches: the event is published exactly as without it. Agents report where they
stand in Redis (presence); the answer is as trustworthy as those records, which anyone who
can write Redis can fake (docs/protocol.md), so it confirms for an operator, not for a proof.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ._common import emit_json

if TYPE_CHECKING:
    from ..context import IssuerContext

__all__ = ["add_wait_flags", "confirm"]


def _duration(text: str) -> float:
    from keyherald.shared.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_wait_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true",
        help="return once every live agent reports holding the event; exit 1 naming those that do not",
    )
    parser.add_argument("--timeout", type=_duration, default=10.0, metavar="DURATION",
                        help="how long --wait waits (default 10s)")


async def confirm(ctx: IssuerContext, args: argparse.Namespace, seq: int, done: dict[str, Any]) -> int:
    """Wait (with ``--wait``) and report; the exit code of the command."""
    if not getattr(args, "wait", False):
        if getattr(args, "json", False):
            emit_json(done)
        return 0
    from ..fleet import Target, wait_for_fleet

    state = await ctx.log.sync()
    target = Target(state.log, seq, state.time)
    result = await wait_for_fleet(ctx.redis, ctx.names, state.position, target, timeout=args.timeout)
    total = len(result.confirmed) + len(result.missing)
    if getattr(args, "json", False):
        emit_json({**done, "confirmed": len(result.confirmed), "live": total,
                   "missing": [a.as_dict() for a in result.missing], "elapsed": round(result.elapsed, 3)})
    elif result.complete:
        print(f"applied by {total} of {total} live agents in {result.elapsed * 1000:.0f} ms")
    else:
        print(f"not confirmed after {result.elapsed:.1f}s: {len(result.confirmed)} of {total} live agents hold it;"
              " waiting for:", file=sys.stderr)
        for agent in result.missing:
            record = agent.record
            print(f"  {record.agent_id}  seq {record.seq}  last seen {agent.age:.1f}s ago"
                  f"{'  (stale)' if record.stale else ''}", file=sys.stderr)
    return 0 if result.complete else 1
