"""What the console's pages show, read from the replica's runtime and Redis (no writes here).

Everything shown comes from where the CLI and the admin API read it: the verified log
(keys, clients, events), the fleet's presence records (:mod:`...fleet`, advisory), this
replica's runtime (role, Redis reachability, problem) and the leader lease.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from keyherald.shared.events import EventType

from ...eventfeed import describe, recent
from ...fleet import AgentView, FleetView, read_fleet
from .timeline import Timeline, timeline

if TYPE_CHECKING:
    from keyherald.shared.events import Event

    from .. import Service

__all__ = ["EVENT_TYPES", "events", "fleet", "fleet_doc", "health", "keys"]

EVENT_TYPES = tuple(str(t) for t in EventType)
RECENT = 500
"""Entries of the stream the events page reads (newest first) before filtering."""


async def health(service: Service) -> dict[str, Any]:
    """This replica: role, Redis, the head of the log, the leader, and what is wrong if anything."""
    runtime = service.runtime
    leader: str | None = None
    with contextlib.suppress(RedisError, OSError):  # Redis down is shown as such, below
        found = await service.redis.get(service.names.leader)
        leader = found.decode("utf-8", "replace") if isinstance(found, bytes) else found
    state = runtime.ctx.log.state if runtime.ctx.log_ready else None
    problem = runtime.problem or (None if runtime.redis_ok else "Redis is unreachable")
    if problem is None and not runtime.healthy:
        problem = "the duty cycle keeps failing"
    return {
        "replica": runtime.replica_id, "namespace": service.names.namespace, "role": runtime.role,
        "redis": runtime.redis_ok, "ok": runtime.healthy,
        "seq": state.seq if state is not None else runtime.seq, "log": state.log if state is not None else None,
        "leader": leader, "leader_is_me": leader == runtime.replica_id, "problem": problem,
        "head_time": state.time if state is not None else None, "now": service.clock(),
    }


def _agent(a: AgentView, heartbeat: float) -> dict[str, Any]:
    doc: dict[str, Any] = a.as_dict()
    # An agent rewrites its record at most once a second, and a heartbeat it has not seen
    # yet is no news: only a stale agent, one on another log, or one missing more than two
    # heartbeats' worth of events needs a look.
    doc["behind"] = a.record.stale or a.lag_events is None or a.lag_seconds > 2 * heartbeat + 2
    return doc


def fleet_doc(view: FleetView, heartbeat: float) -> dict[str, Any]:
    """The fleet for the page: every agent, and which ones need a look."""
    live = [_agent(a, heartbeat) for a in view.live]
    return {
        "head": {"log": view.head.log, "seq": view.head.seq},
        "live": live, "lost": [_agent(a, heartbeat) for a in view.lost], "unseen": view.unseen,
        "trouble": sum(1 for a in live if a["behind"]),
    }


async def fleet(service: Service) -> FleetView:
    state = await service.state()
    return await read_fleet(service.redis, service.names, state.position)


async def keys(service: Service) -> Timeline:
    state = await service.state()
    expired = [(str(e.data.get("kid", "")), e.time) for e in await recent(service.runtime.ctx, RECENT)
               if e.type == EventType.KEY_EXPIRED]
    return timeline(state, service.clock(), expired)


async def events(service: Service, kind: str | None, limit: int = 200) -> list[dict[str, Any]]:
    """The newest events (heartbeats only when asked for by type), newest first."""
    found: list[Event] = await recent(service.runtime.ctx, RECENT)
    if kind:
        found = [e for e in found if e.type == kind]
    else:
        found = [e for e in found if e.type != EventType.HEARTBEAT]
    return [{"seq": e.seq, "time": e.time, "type": str(e.type), "what": describe(e), "log": e.log}
            for e in found[:limit]]
