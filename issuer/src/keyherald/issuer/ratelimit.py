"""Limits on FAILED client authentication, per client_id and per source address, in Redis.

Brute force against a client secret is hopeless (256 bits), but a flood of failures still
costs CPU and fills logs, and a leaked-but-rotated secret should not be hammered forever.
Counts live in Redis so that every replica shares them. A fixed window on the injected clock
(``<ident>:<window number>`` keys, INCR plus an EXPIRE for cleanup) is enough here: at worst
twice the limit passes around a window boundary. Successful requests are never counted, but
a client over its limit is refused with 429 even with the right secret until the window
ends; otherwise the limit would not stop anyone.

The client_id is whatever the request claims, so unknown ids are limited too. The per-client
counter is kept per (client_id, source address): client_ids are not secret (every token
names its own), so counting failures by id alone would let anyone lock a client out from
anywhere; this way a brute-forcer locks out only itself. The per-address limit (looser:
many clients may share a NAT) bounds an attacker that varies ids. Behind a proxy, set
uvicorn's forwarded-allow-ips to the proxy only, or every caller shares one address.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

from redis.asyncio import Redis

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.names import Names

__all__ = ["AuthFailureLimiter", "Verdict"]

_PLAIN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _ident(value: str) -> str:
    """Key-safe and bounded: plain ids as they are, anything else hashed."""
    if _PLAIN.fullmatch(value):
        return value
    return "~" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:24]


@dataclass(frozen=True)
class Verdict:
    """Whether to refuse before even checking credentials, and for how long."""

    retry_after: int | None

    @property
    def limited(self) -> bool:
        return self.retry_after is not None


class AuthFailureLimiter:
    def __init__(
        self,
        redis: Redis,
        names: Names,
        *,
        per_client: int,
        per_address: int,
        window: float = 60.0,
        clock: Clock = system_clock,
    ) -> None:
        self._redis = redis
        self._names = names
        self.per_client = per_client
        self.per_address = per_address
        self.window = window
        self._clock = clock
        self._keys: dict[tuple[str | None, str | None], tuple[int, str | None, str | None]] = {}
        """The counters' names by (client_id, address), for the window they were made in:
        every token request asks, and building them is most of what a check costs."""

    def _window(self) -> tuple[int, float]:
        now = self._clock()
        number = int(now // self.window)
        return number, (number + 1) * self.window - now

    def keys(self, client_id: str | None, address: str | None) -> tuple[str | None, str | None]:
        """The counters that apply now (None where there is nothing to count by)."""
        number = int(self._clock() // self.window)
        known = self._keys.get((client_id, address))
        if known is not None and known[0] == number:
            return known[1], known[2]
        if len(self._keys) >= 4096:
            self._keys.clear()
        client, addr = self._make_keys(client_id, address, number)
        self._keys[(client_id, address)] = (number, client, addr)
        return client, addr

    def _make_keys(self, client_id: str | None, address: str | None, number: int) -> tuple[str | None, str | None]:
        where = _ident(address) if address else "-"
        client = self._names.ratelimit("client", f"{_ident(client_id)}@{where}:{number}") if client_id else None
        addr = self._names.ratelimit("address", f"{_ident(address)}:{number}") if address else None
        return client, addr

    def verdict(self, client_count: object, address_count: object) -> Verdict:
        """Given the counters' current values (as read from Redis, None when absent)."""
        over = _count(client_count) >= self.per_client or _count(address_count) >= self.per_address
        if not over:
            return Verdict(None)
        _, left = self._window()
        return Verdict(max(1, math.ceil(left)))

    async def check(self, client_id: str | None, address: str | None) -> Verdict:
        client_key, address_key = self.keys(client_id, address)
        wanted = [k for k in (client_key, address_key) if k is not None]
        values = await self._redis.mget(wanted) if wanted else []
        found = dict(zip(wanted, values, strict=True))
        return self.verdict(found.get(client_key or ""), found.get(address_key or ""))

    async def record_failure(self, client_id: str | None, address: str | None) -> None:
        ttl = math.ceil(self.window * 2)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self.keys(client_id, address):
                if key is not None:
                    pipe.incr(key)
                    pipe.expire(key, ttl)
            await pipe.execute()


def _count(value: object) -> int:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0
