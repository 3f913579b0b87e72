"""Presence: what each agent says of itself in Redis, so operators can see the fleet.

Advisory and unsigned: agents hold no keys, so a record proves nothing, and anyone who can
write Redis can fake one (a healthy fleet, a confirmation). Nothing in token validation ever
reads it; it serves the operator's eyes, ``keyherald fleet`` and ``--wait``.

One key per agent, ``{ns}:presence:<agent id>``, holding this record as JSON, written with a
TTL of ``EXPIRE_INTERVALS`` presence intervals and rewritten at least every interval, so a
record's age is ``ttl - PTTL`` whatever the clocks say. An index, ``{ns}:presence`` (a sorted
set of agent ids), lets a reader find them without scanning the keyspace. Redis 7.0 has no
per-field hash expiry, hence a key per agent.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AGENT_COMMANDS",
    "AGENT_ID",
    "EXPIRE_INTERVALS",
    "LIVE_INTERVALS",
    "PresenceRecord",
    "agent_acl_rules",
    "validate_agent_id",
]

AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
LIVE_INTERVALS = 3
"""A record not refreshed within this many intervals is an agent gone silent: lost."""
EXPIRE_INTERVALS = 6
"""... and after this many it expires by itself (the key's TTL)."""


def validate_agent_id(value: str) -> str:
    if not AGENT_ID.fullmatch(value):
        raise ValueError("an agent id is 1-128 letters, digits, '.', '_', ':', '@' or '-', from a letter or digit")
    return value


class PresenceRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    agent_id: str
    audience: list[str] = Field(default_factory=list)
    version: str = ""
    log: str = ""
    seq: int = 0
    event_time: float = 0.0
    """Issuer time of the newest event the agent verified."""
    connected: bool = False
    stale: bool = True
    refusing: bool = True
    refused_events: int = 0
    interval: float = 10.0
    """The agent's presence interval: what live and lost are measured in."""
    written_at: float = 0.0
    """The agent's clock when written (for humans; ages come from the key's TTL)."""


AGENT_COMMANDS = (
    "+xread", "+xrange", "+xrevrange", "+get", "+strlen",  # following the log
    "+set", "+zadd", "+del", "+zrem", "+zremrangebyscore",  # presence
    "+ping", "+client|setname", "+client|setinfo", "+hello",  # connection set-up (redis-py)
)
"""What an agent runs: nothing else is needed, so nothing else is granted."""


def agent_acl_rules(namespace: str) -> list[str]:
    """Redis ACL rules for an agents' user: read the log, write only the presence keys.

    ``ACL SETUSER <name> on ><password> <rules...>``; the hash tag keeps the patterns to the
    namespace's keys. With presence off, drop the presence commands and keys.
    """
    tag = "{" + namespace + "}"
    return [
        "resetkeys", "resetchannels", "-@all", *AGENT_COMMANDS,
        f"%R~{tag}:events", f"%R~{tag}:snapshot", f"~{tag}:presence", f"~{tag}:presence:*",
    ]
