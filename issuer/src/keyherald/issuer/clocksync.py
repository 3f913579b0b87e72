"""One clock for every replica: the host's, corrected by its offset to the Redis server's.

Event times are revocation cut-offs (``subject.revoked`` refuses tokens with ``iat`` up to
its time), and a token's ``iat`` comes from whichever replica signed it. With each host's
own clock, a replica running 4 s fast issues tokens a subject revocation made on a replica
4 s slow does not cover. Measuring each host against the one server all replicas share
(``TIME``, the sample with the shortest round trip of the last few) leaves them within
milliseconds of each other.

The correction is bounded by ``max_skew``: a server whose clock is further off than that is a
setting to fix (start-up refuses it), and a server that lies about its time cannot move the
issuer's clock further than the skew the deployment tolerates anyway.
"""

from __future__ import annotations

import time
from collections import deque

from redis.asyncio import Redis

from keyherald.shared.clock import Clock

__all__ = ["RedisClock"]

_SAMPLES = 8


class RedisClock:
    """``clock()`` = host time + the measured offset (clamped to ±``max_skew``)."""

    def __init__(self, host: Clock, *, max_skew: float) -> None:
        self._host = host
        self._max_skew = max_skew
        self._samples: deque[tuple[float, float]] = deque(maxlen=_SAMPLES)
        """(round trip, offset) of recent measurements."""
        self.offset = 0.0
        self.raw_offset = 0.0
        """The measured offset before clamping: what start-up compares with max_skew."""

    def __call__(self) -> float:
        return self._host() + self.offset

    async def measure(self, redis: Redis) -> float:
        """Sample the offset once; returns the offset now in use."""
        before, started = self._host(), time.perf_counter()
        seconds, micros = await redis.time()
        rtt = time.perf_counter() - started
        server = seconds + micros / 1e6
        self._samples.append((rtt, server - (before + rtt / 2)))
        best = min(self._samples)[1]
        self.raw_offset = best
        self.offset = max(-self._max_skew, min(self._max_skew, best))
        return self.offset
