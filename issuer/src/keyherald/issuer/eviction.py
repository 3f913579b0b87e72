"""Refuse a Redis that may evict keyherald's keys.

Redis run as a cache evicts keys under memory pressure. keyherald's keys carry no TTL (but
the leader lease), so ``volatile-*`` policies and ``noeviction`` never touch them; an
``allkeys-*`` policy may evict the control key, the log or the client records at any time.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from keyherald.shared.errors import SettingsError

__all__ = ["check_eviction_policy", "unsafe_policy"]

log = logging.getLogger("keyherald.issuer")


def unsafe_policy(policy: str) -> bool:
    return policy.lower().startswith("allkeys-")


async def check_eviction_policy(redis: Redis) -> str | None:
    """The server's maxmemory-policy (None when the server will not say: a warning, not a
    refusal, since managed services often hide CONFIG). SettingsError when it may evict."""
    try:
        reply = await redis.config_get("maxmemory-policy")
    except ResponseError as exc:  # CONFIG disabled, renamed, or not allowed to this user
        log.warning("cannot read Redis' maxmemory-policy (%s): make sure it is not allkeys-*", str(exc)[:80])
        return None
    except RedisError:
        raise
    policy = str(reply.get("maxmemory-policy", "")) if isinstance(reply, dict) else ""
    if unsafe_policy(policy):
        raise SettingsError(
            "Redis maxmemory-policy",
            f"is {policy}: Redis may evict keyherald's keys (the control key, the log, the clients). Set it to"
            " noeviction (or a volatile-* policy): CONFIG SET maxmemory-policy noeviction, and in redis.conf",
        )
    return policy or None
