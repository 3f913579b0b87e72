"""The fleet as agents report it: who is live, who is behind, who went silent.

Read from the agents' presence records (:mod:`keyherald.shared.presence`), which are advisory:
anyone who can write Redis can fake a healthy fleet or a confirmation. The view is for the
operator's eyes and scripts (``keyherald fleet``, ``--wait``, ``/admin/fleet``, metrics); no
token is ever accepted or refused because of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from keyherald.shared.chain import Position
from keyherald.shared.names import Names
from keyherald.shared.presence import EXPIRE_INTERVALS, LIVE_INTERVALS, PresenceRecord

from .logreader import raw

__all__ = ["AgentView", "Confirmation", "FleetView", "Target", "read_fleet", "wait_for_fleet"]


@dataclass(frozen=True)
class Target:
    """An event an operator wants the fleet to hold: its log, seq and (issuer) time."""

    log: str
    seq: int
    time: float


@dataclass(frozen=True)
class AgentView:
    record: PresenceRecord
    age: float
    """Seconds since the agent last wrote its record (from the key's TTL: no clock involved)."""
    live: bool
    lag_events: int | None
    """How many events behind the head of the log the agent is (None: on another log)."""
    lag_seconds: float
    """Issuer time between the head and the newest event the agent verified."""

    @property
    def agent_id(self) -> str:
        return self.record.agent_id

    def holds(self, target: Target) -> bool:
        """Does the agent hold the event (or a later log that took it over)?"""
        record = self.record
        if record.log == target.log:
            return record.seq >= target.seq
        return bool(record.log) and record.event_time >= target.time

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.record.model_dump(mode="json"), "age": round(self.age, 3), "live": self.live,
            "lag_events": self.lag_events, "lag_seconds": round(self.lag_seconds, 3),
        }


@dataclass(frozen=True)
class FleetView:
    head: Position
    live: tuple[AgentView, ...]
    lost: tuple[AgentView, ...]
    unseen: int | None
    """Agents connected that report no presence (``presence=off``), as far as Redis shows it
    (CLIENT LIST, where the reader may run it); None when it cannot tell."""

    def missing(self, target: Target) -> list[AgentView]:
        return [agent for agent in self.live if not agent.holds(target)]

    @property
    def max_lag(self) -> tuple[int, float]:
        events = max((a.lag_events or 0 for a in self.live), default=0)
        seconds = max((a.lag_seconds for a in self.live), default=0.0)
        return events, seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "head": {"log": self.head.log, "seq": self.head.seq, "time": self.head.time},
            "live": [a.as_dict() for a in self.live],
            "lost": [a.as_dict() for a in self.lost],
            "unseen": self.unseen,
        }


async def read_fleet(redis: Redis, names: Names, head: Position) -> FleetView:
    ids = [i.decode("utf-8", "replace") if isinstance(i, bytes) else str(i)
           for i in await raw(redis, "ZRANGE", names.presence_index, 0, -1)]
    views: list[AgentView] = []
    if ids:
        async with redis.pipeline(transaction=False) as pipe:
            for agent_id in ids:
                pipe.get(names.presence(agent_id))
                pipe.pttl(names.presence(agent_id))
            replies = await pipe.execute(raise_on_error=False)
        for agent_id, body, pttl in zip(ids, replies[0::2], replies[1::2], strict=True):
            view = _view(agent_id, body, pttl, head)
            if view is not None:
                views.append(view)
    live = tuple(sorted((v for v in views if v.live), key=lambda v: v.agent_id))
    lost = tuple(sorted((v for v in views if not v.live), key=lambda v: v.agent_id))
    return FleetView(head, live, lost, await _unseen(redis, names, len(live)))


def _view(agent_id: str, body: Any, pttl: Any, head: Position) -> AgentView | None:
    if not isinstance(body, str | bytes) or not isinstance(pttl, int) or pttl < 0:
        return None  # expired (or never written, or not ours to read)
    try:
        record = PresenceRecord.model_validate_json(body)
    except ValidationError:
        return None
    if record.agent_id != agent_id:
        return None
    age = max(0.0, record.interval * EXPIRE_INTERVALS - pttl / 1000)
    live = age <= record.interval * LIVE_INTERVALS
    lag_events = max(0, head.seq - record.seq) if record.log == head.log else None
    lag_seconds = max(0.0, head.time - record.event_time)
    return AgentView(record, age, live, lag_events, lag_seconds)


async def _unseen(redis: Redis, names: Names, live: int) -> int | None:
    try:
        clients: Sequence[dict[str, Any]] = await redis.client_list()
    except (ResponseError, RedisError):
        return None  # no permission to list clients: cannot tell
    wanted = f"keyherald-agent:{names.namespace}"
    connected = sum(1 for c in clients if c.get("name") == wanted)
    return max(0, connected - live)


@dataclass(frozen=True)
class Confirmation:
    confirmed: tuple[AgentView, ...]
    missing: tuple[AgentView, ...]
    elapsed: float

    @property
    def complete(self) -> bool:
        return not self.missing


async def wait_for_fleet(
    redis: Redis, names: Names, head: Position, target: Target, *, timeout: float, every: float = 0.05,
    until: Callable[[Confirmation], bool] | None = None, silent_since: float | None = None,
) -> Confirmation:
    """Until every agent live when the wait began holds ``target`` (or ``timeout``, or ``until``
    says so: a watcher that wants each change): who did, who did not. An agent that goes
    silent meanwhile stays awaited (a frozen agent must be named, not quietly dropped as lost).
    ``silent_since`` (seconds ago): await also the agents still live then, as long as their
    record lasts (a page that asks again and again waits for those live at the event)."""
    started = time.monotonic()
    first = await read_fleet(redis, names, head)
    awaited = {a.agent_id: a for a in first.live}
    if silent_since is not None:
        awaited.update({a.agent_id: a for a in first.lost
                        if a.age - LIVE_INTERVALS * a.record.interval <= silent_since})
    while True:
        view = await read_fleet(redis, names, head)
        seen = {a.agent_id: a for a in (*view.live, *view.lost)}
        for agent_id, agent in seen.items():
            if agent_id in awaited:
                awaited[agent_id] = agent
        confirmed = tuple(a for a in awaited.values() if a.holds(target))
        missing = tuple(a for a in awaited.values() if not a.holds(target))
        result = Confirmation(confirmed, missing, time.monotonic() - started)
        if not missing or result.elapsed >= timeout or (until is not None and until(result)):
            return result
        await asyncio.sleep(every)
