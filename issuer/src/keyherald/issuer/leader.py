"""The leader lease: exactly one replica rotates keys and sends heartbeats.

A key in Redis holding the leader's replica id, with a TTL the leader keeps renewing.
When the leader dies the key expires and the next replica to try takes it. A key no
replica would have written (no TTL, one far longer than the lease, another type) is taken
over at once: one SET by someone who can write Redis must not stop rotation and heartbeats. Safety does
not rest on the lease alone: every append is a compare-and-set on the log's head, so a
paused ex-leader cannot fork the log; the lease only keeps the work in one place.
"""

from __future__ import annotations

from redis.asyncio import Redis

from keyherald.shared.names import Names

__all__ = ["LeaderLease"]

_HOLD = """
local holder = redis.pcall('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder and type(holder) == 'string' then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl >= 0 and ttl <= 3 * tonumber(ARGV[2]) then return 0 end
end
-- Free, or not a lease any replica would hold (no TTL, an endless one, not a string):
-- whoever wrote it, it must not stop every replica from leading.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderLease:
    def __init__(self, redis: Redis, names: Names, replica_id: str, ttl: float) -> None:
        self._redis = redis
        self._key = names.leader
        self.replica_id = replica_id
        self._ttl_ms = max(100, int(ttl * 1000))
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Take the lease if free, renew it if ours; True while we lead."""
        return bool(await self._hold(keys=[self._key], args=[self.replica_id, self._ttl_ms]))

    async def release(self) -> None:
        """Step down at once on a clean shutdown, so a peer need not wait for the TTL."""
        await self._release(keys=[self._key], args=[self.replica_id])

    async def holder(self) -> str | None:
        value = await self._redis.get(self._key)
        return value.decode() if isinstance(value, bytes) else value
