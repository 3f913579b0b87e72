"""Revocation propagation: from the XADD of a revocation to its being applied in N agents.

    uv run python bench/propagation.py                 # embedded Valkey
    KEYHERALD_TEST_REDIS_URL=redis://127.0.0.1:6379/0 uv run python bench/propagation.py

Every revocation is published with ``Admin.revoke_token`` through an IssuerContext; the
clock starts just before the issuer's append script (which does the XADD) is sent. For
N = 1, 10, 100, 1000, in one run against one server:

- bare: N redis-py clients, one connection each, in a blocking ``xread`` loop on the
  issuer's stream; the clock stops when each reader holds the entry. The baseline of
  issue 3's target: what a follower written with redis-py pays.
- lean: the same, each reading on a redis-py connection of its own with the reply read raw
  (no pool checkout, retry wrapper or reply callback per read), as the agent reads: the
  floor, so that "agent / lean" is the cost of the agent's own work.
- agent: N full VerifierAgents (one connection and one follower each, all in this process's
  event loop); the clock stops when each agent has verified and applied the event.
- agent, each verifies: the same with the per-process sharing of envelope verification
  off, so every agent checks the signature itself. In one process that CPU adds up
  serially (N x one verification); agents in separate processes pay it in parallel. At
  N = 1 it is the same code as "agent": the gap between the two is the run's own noise.

The four run in alternating blocks (bare, lean, agent, each verifies; the order rotates),
so that a machine getting busier or quieter during the run weighs on all of them alike.
p50 and p99 are over every (reader, revocation) pair of a contender's blocks, after a few
warm-up revocations per block. Agents run with the defaults a service gets (XREAD BLOCK 2 s,
socket timeout above it) and the issuer's default control key (RSA-3072, PS256).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
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
from keyherald.verifier.signedstate import set_shared_verification
from keyherald.verifier.source import connect

__all__ = ["main"]

ROUNDS = {1: 2000, 10: 400, 100: 100, 1000: 24}
"""Revocations measured per contender (over all its blocks), by N: p99 needs many at N = 1,
where a single slow wake-up of the VM moves it."""
BLOCKS = {1: 8, 10: 4, 100: 4, 1000: 2}
GAP = 0.01
"""Pause between revocations, so that each one is measured on its own."""
WARMUP = 3
"""Revocations sent first and left out of the figures (connections and caches warm up)."""


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
        self.resynced = 0
        """Arrivals by a resync rather than by the event (see ``watch``)."""
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
        # N readers in one process make a heap N times a service's, and the cyclic GC's full
        # passes over it (100-250 ms at N = 1000) would land in the figures: they measure
        # the packing, not the reader. So the heap built by the set-up is frozen (left out
        # of collections) while measuring, for every contender alike; what the readers
        # allocate per event is still collected as usual.
        gc.collect()
        gc.freeze()
        try:
            return await self._run(n, rounds, by_entry_id=by_entry_id)
        finally:
            gc.unfreeze()

    async def _run(self, n: int, rounds: int, *, by_entry_id: bool) -> list[float]:
        scripts: Any = self.ctx.log._scripts  # the append script, timed from the call
        script = scripts._append

        async def timed(*, keys: list[str], args: list[Any]) -> Any:
            t0 = time.perf_counter()
            self.started[self._jti] = self.started[f"{int(args[3])}-0"] = t0  # args[3]: the first seq
            return await script(keys=keys, args=args)

        scripts._append = timed
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
                    raise SystemExit(f"timed out waiting for {n} readers ({self.seen[key]} arrived)") from None
                await asyncio.sleep(GAP)
        finally:
            scripts._append = script
        return self.latencies


async def bare(ctx: IssuerContext, n: int, rounds: int) -> list[float]:
    """N XREAD loops through redis-py's ``xread`` on the issuer's own stream."""
    return await plain_readers(ctx, n, rounds, lean=False)


async def lean(ctx: IssuerContext, n: int, rounds: int) -> list[float]:
    """N XREAD loops each on a redis-py connection of its own, the reply read raw: the way
    the agent reads, so the gap to the agent is the agent's own work."""
    return await plain_readers(ctx, n, rounds, lean=True)


async def plain_readers(ctx: IssuerContext, n: int, rounds: int, *, lean: bool) -> list[float]:
    url, stream = ctx.settings.redis_url, ctx.names.events
    publisher = Publisher(ctx)
    readers = [connect(url) for _ in range(n)]
    first = f"{(await publisher.admin.state()).seq}-0"

    async def read(redis: Redis) -> None:
        last = first
        conn: Any = await redis.connection_pool.get_connection() if lean else None  # type: ignore[no-untyped-call]
        while True:
            response: Any
            if conn is None:
                response = await redis.xread({stream: last}, block=2000, count=100)
            else:
                await conn.send_command("XREAD", "COUNT", 100, "BLOCK", 2000, "STREAMS", stream, last)
                response = await conn.read_response()
            now = time.perf_counter()
            batches = response.values() if isinstance(response, dict) else [b for _s, b in response or ()]
            for entries in batches:  # RESP3 (redis-py's default) map or RESP2 array
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


def watch(agent: VerifierAgent, publisher: Publisher, n: int) -> None:
    """Report each revocation once, when it took effect in ``agent``: mostly on applying its
    event; now and then by a resync instead (an idle read timing out just as the revocation
    lands makes the agent read the snapshot, which already holds it)."""
    reported: set[str] = set()
    signed = agent._signed

    def report(jti: str, *, by_resync: bool = False) -> None:
        if jti not in reported:
            reported.add(jti)
            publisher.arrived(jti, n, time.perf_counter())
            publisher.resynced += by_resync

    def applied(event: Event) -> None:
        if event.type == EventType.TOKEN_REVOKED:
            report(event.data["jti"])

    adopt = signed.adopt

    def adopted(text: str, snapshot: Any) -> Any:
        outcome = adopt(text, snapshot)
        held = signed.keys.state.revoked_tokens
        for jti in [j for j in publisher.seen if j in held]:
            report(jti, by_resync=True)
        return outcome

    signed.listeners.append(applied)
    signed.adopt = adopted  # type: ignore[method-assign]


async def agents(ctx: IssuerContext, n: int, rounds: int) -> list[float]:
    settings = VerifierSettings(
        redis_url=ctx.settings.redis_url, namespace=ctx.settings.namespace, issuer=ctx.settings.issuer,
        audience="bench", trust_anchor=ctx.control.anchor.thumbprint, startup_timeout="60s",
    )
    fleet = [VerifierAgent(settings) for _ in range(n)]
    publisher = Publisher(ctx)
    for agent in fleet:
        watch(agent, publisher, n)
    for chunk in range(0, n, 100):
        await asyncio.gather(*(a.start() for a in fleet[chunk:chunk + 100]))
    try:
        await asyncio.sleep(0.2 + n / 2000)
        return await publisher.run(n, rounds, by_entry_id=False)
    finally:
        RESYNCED[0] += publisher.resynced
        await asyncio.gather(*(a.stop() for a in fleet))


async def each_verifies(ctx: IssuerContext, n: int, rounds: int) -> list[float]:
    set_shared_verification(False)
    try:
        return await agents(ctx, n, rounds)
    finally:
        set_shared_verification(True)


Row = tuple[int, int, dict[str, tuple[float, float]]]


Measure = Callable[[IssuerContext, int, int], Awaitable[list[float]]]
MEASURES: list[tuple[str, Measure]] = [
    ("bare", bare), ("lean", lean), ("agent", agents), ("agent, each verifies", each_verifies),
]
RESYNCED = [0]
"""Agents' arrivals that came by a resync, counted and printed per N, so that a broken
stream path cannot hide in the figures."""


@contextlib.asynccontextmanager
async def fresh_issuer(url: str, **overrides: str) -> AsyncIterator[IssuerContext]:
    """A namespace of its own for each block: the snapshot, which the append script rewrites
    with every event, stays small instead of growing with every revocation of the run (a
    growing append would slow the XADD itself, for every contender, and blur the ratio)."""
    settings = IssuerSettings(
        redis_url=url, namespace=f"bench-{uuid.uuid4().hex[:8]}", issuer="https://issuer.bench",
        kek=generate_kek_text(), heartbeat_interval="1h", **overrides,  # type: ignore[arg-type]
    )
    async with IssuerContext(settings, create=True) as ctx:
        try:
            await Rotator(ctx).tick()
            yield ctx
        finally:
            keys = [k async for k in ctx.redis.scan_iter(match=f"{{{settings.namespace}}}:*")]
            if keys:
                await ctx.redis.delete(*keys)


async def run(sizes: list[int], scale: float) -> str:
    rows: list[Row] = []
    from tests.servers import server_url  # KEYHERALD_TEST_REDIS_URL, or an embedded Valkey

    with server_url() as url:
        for n in sizes:
            rounds = max(5, int(ROUNDS.get(n, 20) * scale))
            blocks = max(1, min(BLOCKS.get(n, 2), rounds // 5))
            measures, RESYNCED[0] = MEASURES, 0
            samples: dict[str, list[float]] = {name: [] for name, _ in measures}
            began = time.perf_counter()
            for block in range(blocks):
                share = rounds // blocks + (1 if block < rounds % blocks else 0)
                turn = block % len(measures)
                for name, measure in measures[turn:] + measures[:turn]:
                    async with fresh_issuer(url) as ctx:
                        samples[name] += await measure(ctx, n, share)
            results = {name: percentiles(values) for name, values in samples.items()}
            for name, (p50, p99) in results.items():
                print(f"  n={n:>4} {name:<21} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms", file=sys.stderr)
            print(f"  n={n:>4} {blocks} blocks, {time.perf_counter() - began:.1f}s; "
                  f"agents' arrivals by resync: {RESYNCED[0]}", file=sys.stderr)
            rows.append((n, rounds, results))
    return table(rows)


def table(rows: list[Row]) -> str:
    lines = [
        "| agents | revocations | bare p50 / p99 (ms) | lean p50 / p99 (ms) | agent p50 / p99 (ms) "
        "| agent p99 / bare p99 | agent p99 / lean p99 | agent, each verifies p50 / p99 (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, rounds, r in rows:
        b, w, a, e = r["bare"], r["lean"], r["agent"], r["agent, each verifies"]
        lines.append(
            f"| {n} | {rounds} | {b[0]:.2f} / {b[1]:.2f} | {w[0]:.2f} / {w[1]:.2f} | {a[0]:.2f} / {a[1]:.2f} "
            f"| {a[1] / b[1]:.2f} | {a[1] / w[1]:.2f} | {e[0]:.2f} / {e[1]:.2f} |"
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
