"""Revocation propagation: from the XADD of a revocation to its being applied in N agents.

    uv run python bench/propagation.py                 # embedded Valkey
    KEYHERALD_TEST_REDIS_URL=redis://127.0.0.1:6379/0 uv run python bench/propagation.py

Every revocation is published with ``Admin.revoke_token`` through an IssuerContext; the
clock starts just before the issuer's append script (which does the XADD) is sent. For
N = 1, 10, 100, 1000, in one run against one server:

- bare: N redis-py clients, one connection each, in a blocking XREAD loop on the issuer's
  stream; the clock stops when each reader holds the entry. The floor any follower pays.
- agent: N full VerifierAgents (one connection and one follower each, all in this process's
  event loop); the clock stops when each agent has verified and applied the event.
- agent, each verifies: the same with the per-process sharing of envelope verification
  off, so every agent checks the Ed25519 signature itself. In one process that CPU adds
  up serially (N x one verification); agents in separate processes pay it in parallel.

p50 and p99 are over every (reader, revocation) pair, after a few warm-up revocations.
Agents run with the defaults a service gets (XREAD BLOCK 2 s, socket timeout above it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.events import Event, EventType
from keyherald.verifier import VerifierAgent, VerifierSettings
from keyherald.verifier.follower import connect
from keyherald.verifier.signedstate import set_shared_verification

__all__ = ["main"]

ROUNDS = {1: 200, 10: 100, 100: 40, 1000: 15}
GAP = 0.01
"""Pause between revocations, so that each one is measured on its own."""
WARMUP = 3
"""Revocations sent first and left out of the figures (connections and caches warm up)."""


@contextlib.contextmanager
def server() -> Iterator[str]:
    url = os.environ.get("KEYHERALD_TEST_REDIS_URL")
    if url:
        yield url
        return
    from tests.servers import EmbeddedValkey

    valkey = EmbeddedValkey()
    try:
        yield valkey.url
    finally:
        valkey.close()


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


class Publisher:
    """Publishes revocations and notes when each XADD went out; waits for all N readers."""

    def __init__(self, ctx: IssuerContext) -> None:
        self.ctx = ctx
        self.admin = Admin(ctx)
        self.started: dict[str, float] = {}
        """Entry id or jti -> the moment its append script was sent."""
        self.seen: dict[str, int] = {}
        self.done: dict[str, asyncio.Event] = {}
        self.warmup: set[str] = set()
        self.latencies: list[float] = []
        self._jti = ""

    def arrived(self, key: str, n: int, now: float) -> None:
        if key not in self.seen:
            return  # an entry this measure did not send
        if key not in self.warmup:
            self.latencies.append(now - self.started[key])
        self.seen[key] += 1
        if self.seen[key] == n:
            self.done[key].set()

    async def run(self, n: int, rounds: int, *, by_entry_id: bool) -> list[float]:
        log: Any = self.ctx.log
        script = log._script

        async def timed(*, keys: list[str], args: list[str]) -> Any:
            t0 = time.perf_counter()
            self.started[self._jti] = self.started[f"{int(args[0]) + 1}-0"] = t0
            return await script(keys=keys, args=args)

        log._script = timed
        try:
            for i in range(WARMUP + rounds):
                self._jti = f"bench-{uuid.uuid4().hex[:12]}"
                seq = (await self.admin.state()).seq + 1
                key = f"{seq}-0" if by_entry_id else self._jti
                if i < WARMUP:
                    self.warmup.add(key)
                self.seen[key], self.done[key] = 0, asyncio.Event()
                await self.admin.revoke_token(self._jti, int(time.time()) + 300)
                try:
                    await asyncio.wait_for(self.done[key].wait(), 30)
                except TimeoutError:
                    raise SystemExit(f"timed out waiting for {n} readers") from None
                await asyncio.sleep(GAP)
        finally:
            log._script = script
        return self.latencies


async def bare(ctx: IssuerContext, n: int, rounds: int) -> list[float]:
    """N raw XREAD loops on the issuer's own stream: the same XADDs the agents receive."""
    url, stream = ctx.settings.redis_url, ctx.names.events
    publisher = Publisher(ctx)
    readers = [connect(url) for _ in range(n)]
    first = f"{(await publisher.admin.state()).seq}-0"

    async def read(redis: Redis) -> None:
        last = first
        while True:
            response: Any = await redis.xread({stream: last}, block=2000, count=100)
            now = time.perf_counter()
            for _name, entries in response or ():
                for raw_id, _fields in entries:
                    entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                    publisher.arrived(entry_id, n, now)
                    last = entry_id

    tasks = [asyncio.create_task(read(r)) for r in readers]
    try:
        await asyncio.sleep(0.2 + n / 2000)  # every reader blocked in XREAD
        return await publisher.run(n, rounds, by_entry_id=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=1)
        for client in readers:
            await client.aclose()
        await asyncio.wait(tasks, timeout=5)


async def agents(ctx: IssuerContext, n: int, rounds: int) -> list[float]:
    settings = VerifierSettings(
        redis_url=ctx.settings.redis_url, namespace=ctx.settings.namespace, issuer=ctx.settings.issuer,
        audience="bench", trust_anchor=ctx.control.anchor.thumbprint, startup_timeout="60s",
    )
    fleet = [VerifierAgent(settings) for _ in range(n)]
    publisher = Publisher(ctx)

    def applied(event: Event) -> None:
        if event.type == EventType.TOKEN_REVOKED:
            publisher.arrived(event.data["jti"], n, time.perf_counter())

    for agent in fleet:
        agent._signed.listeners.append(applied)
    for chunk in range(0, n, 100):
        await asyncio.gather(*(a.start() for a in fleet[chunk:chunk + 100]))
    try:
        await asyncio.sleep(0.2 + n / 2000)
        return await publisher.run(n, rounds, by_entry_id=False)
    finally:
        await asyncio.gather(*(a.stop() for a in fleet))


async def each_verifies(ctx: IssuerContext, n: int, rounds: int) -> list[float]:
    set_shared_verification(False)
    try:
        return await agents(ctx, n, rounds)
    finally:
        set_shared_verification(True)


Row = tuple[int, int, dict[str, tuple[float, float]]]


async def run(sizes: list[int], scale: float) -> str:
    rows: list[Row] = []
    with server() as url:
        settings = IssuerSettings(
            redis_url=url, namespace=f"bench-{uuid.uuid4().hex[:8]}", issuer="https://issuer.bench",
            kek=generate_kek_text(), heartbeat_interval="1h",
        )
        async with IssuerContext(settings) as ctx:
            await Rotator(ctx).tick()
            try:
                for n in sizes:
                    rounds = max(5, int(ROUNDS.get(n, 20) * scale))
                    measures: list[tuple[str, Callable[[], Awaitable[list[float]]]]] = [
                        ("bare", lambda n=n, rounds=rounds: bare(ctx, n, rounds)),
                        ("agent", lambda n=n, rounds=rounds: agents(ctx, n, rounds)),
                        ("agent, each verifies", lambda n=n, rounds=rounds: each_verifies(ctx, n, rounds)),
                    ]
                    results: dict[str, tuple[float, float]] = {}
                    for name, measure in measures:
                        began = time.perf_counter()
                        results[name] = percentiles(await measure())
                        p50, p99 = results[name]
                        print(f"  n={n:>4} {name:<21} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
                              f"  ({time.perf_counter() - began:.1f}s)", file=sys.stderr)
                    rows.append((n, rounds, results))
            finally:
                keys = [k async for k in ctx.redis.scan_iter(match=f"{{{settings.namespace}}}:*")]
                if keys:
                    await ctx.redis.delete(*keys)
    return table(rows)


def table(rows: list[Row]) -> str:
    lines = [
        "| agents | revocations | bare p50 / p99 (ms) | agent p50 / p99 (ms) | agent p99 / bare p99 "
        "| agent, each verifies p50 / p99 (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, rounds, r in rows:
        b, a, e = r["bare"], r["agent"], r["agent, each verifies"]
        lines.append(
            f"| {n} | {rounds} | {b[0]:.2f} / {b[1]:.2f} | {a[0]:.2f} / {a[1]:.2f} | "
            f"{a[1] / b[1]:.2f} | {e[0]:.2f} / {e[1]:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Revocation propagation to N agents, beside a bare XREAD loop.")
    parser.add_argument("--agents", default="1,10,100,1000", help="comma-separated N values")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of revocations")
    args = parser.parse_args()
    sizes = [int(x) for x in args.agents.split(",") if x]
    print(asyncio.run(run(sizes, args.scale)))


if __name__ == "__main__":
    main()
