"""What presence costs Redis: 1,000 agents following a live issuer, with presence on and off.

    uv run python bench/presence.py                      # 1,000 agents, 30 s per block
    uv run python bench/presence.py --agents 200 --seconds 10

The agents are real VerifierAgents (in this process, over their own connections) on an
embedded Valkey of the bench's own, so that the server's counters hold only this. An issuer
leader appends its heartbeats (every 5 s, the default) so that every agent's seq moves, as in
a quiet production fleet. Each block measures, from the server's INFO, the commands it
executed (per command) and the bytes it received and sent; the presence figures are the
difference between the two blocks, per second. The blocks alternate (off, on, off, on) so
that a machine getting busier weighs on both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings
from keyherald.verifier import VerifierAgent, VerifierSettings

__all__ = ["main"]


@contextlib.asynccontextmanager
async def issuer(url: str) -> AsyncIterator[IssuerContext]:
    settings = IssuerSettings(
        redis_url=url,
        namespace=f"bench-{uuid.uuid4().hex[:8]}",
        issuer="https://issuer.bench",
        kek=generate_kek_text(),
        state_dir="off",
        control_key_alg="EdDSA",
    )
    async with IssuerContext(settings, create=True) as ctx:
        await Rotator(ctx).tick()
        yield ctx


async def heartbeats(ctx: IssuerContext) -> None:
    rotator = Rotator(ctx)
    while True:
        await asyncio.sleep(0.5)
        await rotator.tick()  # a heartbeat whenever 5 s passed without an event


async def stats(redis: Redis) -> dict[str, Any]:
    info = await redis.info("all")
    commands = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
    return {"commands": commands, "in": int(info["total_net_input_bytes"]), "out": int(info["total_net_output_bytes"])}


async def block(ctx: IssuerContext, n: int, seconds: float, presence: bool) -> dict[str, Any]:
    s = ctx.settings
    settings = VerifierSettings(
        redis_url=s.redis_url,
        namespace=s.namespace,
        issuer=s.issuer,
        audience="bench",
        trust_anchor=ctx.control.anchor.thumbprint,
        startup_timeout="120s",
        presence=presence,
    )
    fleet = [VerifierAgent(settings) for _ in range(n)]
    for chunk in range(0, n, 100):
        await asyncio.gather(*(a.start() for a in fleet[chunk : chunk + 100]))
    await asyncio.sleep(2)  # every agent wrote its first record
    admin: Redis = ctx.redis
    before, started = await stats(admin), time.monotonic()
    await asyncio.sleep(seconds)
    after, elapsed = await stats(admin), time.monotonic() - started
    await asyncio.gather(*(a.stop() for a in fleet))
    calls = {k: (after["commands"].get(k, 0) - before["commands"].get(k, 0)) / elapsed for k in after["commands"]}
    return {
        "calls": calls,
        "in": (after["in"] - before["in"]) / elapsed,
        "out": (after["out"] - before["out"]) / elapsed,
    }


async def run(url: str, n: int, seconds: float) -> None:
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    async with issuer(url) as ctx:
        beating = asyncio.create_task(heartbeats(ctx))
        try:
            for presence in (False, True, False, True):
                results[presence].append(await block(ctx, n, seconds, presence))
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    def mean(presence: bool, key: str, command: str | None = None) -> float:
        found = results[presence]
        if command is None:
            return sum(r[key] for r in found) / len(found)
        return sum(r["calls"].get(command, 0.0) for r in found) / len(found)

    print(f"{n} agents, {seconds:g} s per block, 2 blocks each, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print()
    print("| per second | presence off | presence on | presence costs |")
    print("|---|---:|---:|---:|")
    for command in ("set", "zadd", "zremrangebyscore", "xread", "xrevrange"):
        off, on = mean(False, "calls", command), mean(True, "calls", command)
        print(f"| {command.upper()} calls | {off:,.1f} | {on:,.1f} | {on - off:+,.1f} |")
    total_off = sum(sum(r["calls"].values()) for r in results[False]) / 2
    total_on = sum(sum(r["calls"].values()) for r in results[True]) / 2
    print(f"| all commands | {total_off:,.1f} | {total_on:,.1f} | {total_on - total_off:+,.1f} |")
    for key, label in (("in", "bytes into Redis"), ("out", "bytes out of Redis")):
        off, on = mean(False, key), mean(True, key)
        print(f"| {label} | {off:,.0f} | {on:,.0f} | {on - off:+,.0f} |")
    print()
    print(
        f"per agent: {(total_on - total_off) / n:.3f} presence commands/s, "
        f"{(mean(True, 'in') - mean(False, 'in')) / n:.0f} bytes/s into Redis"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Redis load of agents' presence, on against off.")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    from tests.servers import EmbeddedValkey

    server = EmbeddedValkey()
    try:
        asyncio.run(run(server.url, args.agents, args.seconds))
    finally:
        server.close()


if __name__ == "__main__":
    main()
