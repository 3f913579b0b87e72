"""Revocations at scale (issue 13): what N live revocations cost the issuer and every agent.

    uv run python bench/revocations.py                       # 1k, 10k, 100k, 1M; embedded Valkey
    uv run python bench/revocations.py --sizes 1000,10000 --appends 100
    KEYHERALD_TEST_REDIS_URL=redis://127.0.0.1:6379/0 uv run python bench/revocations.py

For each N, in a namespace of its own, with the issuer's default control key (RSA-3072, PS256):

- bulk: ``Admin.revoke_tokens`` of N tokens (``tokens.revoked`` chunks, one append, then a
  checkpoint), timed until an agent following the log counts all N in ``status()``: the
  operator's end-to-end time, and its tokens per second;
- append p50 / p99 with N live: single ``token.revoked`` and ``heartbeat`` appends in turn
  (a heartbeat prunes), through ``EventLog.commit``; beside the control key's bare signing
  time (the floor of an append);
- checkpoint: its bytes in Redis (``STRLEN``);
- agent, in a fresh process: bootstrap (``VerifierAgent.start()`` until ready, from the
  checkpoint), memory per revocation (RSS growth, and tracemalloc's live heap in a second
  run), and a revocation lookup (``jti in state.revoked_tokens``, a hit and a miss, the
  loop's own cost taken off);
- the same agent figures with the previous store beside (``reference``): a dict of jti
  strings, the checkpoint's text kept, as the agent held them before this change.

Figures are ratios on a shared machine: read them side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
import timeit
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.exceptions import RedisError

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.rotation import Rotator
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.events import EventType
from keyherald.shared.revocations import TokenSet, next_generation
from keyherald.shared.state import State
from keyherald.verifier import VerifierAgent, VerifierSettings

__all__ = ["main", "run"]

SIZES = (1_000, 10_000, 100_000, 1_000_000)
ISSUER = "https://issuer.bench"


class ReferenceStore(dict[str, int]):
    """The agent's store before this change: a dict of jti strings, pruned by a full scan."""

    def __init__(self, items: Iterable[tuple[str, int]] = ()) -> None:
        super().__init__(items)
        self.generation = next_generation()

    @classmethod
    def from_dict(cls, tokens: dict[str, int]) -> ReferenceStore:
        return cls(tokens.items())

    def get(self, jti: str, default: int = 0) -> int:  # type: ignore[override]
        return dict.get(self, jti, default)

    def revoke(self, jti: str, expires_at: int) -> None:
        self[jti] = max(expires_at, dict.get(self, jti, 0))
        self.generation = next_generation()

    def revoke_many(self, tokens: Iterable[tuple[str, int]]) -> None:
        for jti, end in tokens:
            self.revoke(jti, end)

    def prune(self, horizon: float) -> None:
        for jti in [j for j, end in self.items() if end < horizon]:
            del self[jti]

    def absorb(self, other: TokenSet, horizon: float) -> None:
        raise NotImplementedError

    def beyond(self, other: TokenSet) -> ReferenceStore:
        return ReferenceStore((j, e) for j, e in self.items() if other.get(j, 0) < e)

    def copy(self) -> ReferenceStore:
        return ReferenceStore(self.items())


def _use_reference_store() -> None:
    from keyherald.verifier import keycache, signedstate

    keycache.CompactRevocations = ReferenceStore  # type: ignore[misc, assignment]
    signedstate.CompactRevocations = ReferenceStore  # type: ignore[misc, assignment]


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


async def _agent_worker(args: argparse.Namespace) -> dict[str, float]:
    """In a fresh process: bootstrap one agent, then weigh and time its store."""
    if args.store == "reference":
        _use_reference_store()
    settings = VerifierSettings(redis_url=args.url, namespace=args.namespace, issuer=ISSUER, audience="bench",
                                trust_anchor=args.anchor, startup_timeout="120s", presence=False)
    agent = VerifierAgent(settings)
    if args.store == "reference":
        agent._signed.keep_texts = True  # as before: the checkpoint's text stayed in memory
    gc.collect()
    if args.traced:
        tracemalloc.start()
    before, began = _rss(), time.perf_counter()
    await agent.start()
    ready = time.perf_counter() - began
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] if args.traced else _rss() - before
    store = agent.keys.state.revoked_tokens
    count = len(store)
    result = {"bootstrap": ready, "bytes": grown / max(count, 1), "count": count}
    if not args.traced:
        hits = json.loads(Path(args.probes).read_text())
        misses = [secrets.token_urlsafe(16) for _ in hits]
        for probe in (*hits, *misses):
            hash(probe)  # a jti from a token is hashed once and cached in the string
        empty = min(timeit.repeat(lambda: [None for _ in hits], number=20, repeat=5))
        hit = min(timeit.repeat(lambda: [j in store for j in hits], number=20, repeat=5))
        miss = min(timeit.repeat(lambda: [j in store for j in misses], number=20, repeat=5))
        assert all(j in store for j in hits) and not any(j in store for j in misses)
        per = 20 * len(hits)
        result |= {"hit_ns": (hit - empty) / per * 1e9, "miss_ns": (miss - empty) / per * 1e9}
    await agent.stop()
    return result


def _agent(url: str, namespace: str, anchor: str, probes: Path, store: str, *, traced: bool = False) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--agent-worker", url, namespace, anchor, str(probes), store]
    done = subprocess.run([*argv, *(["--traced"] if traced else [])], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"agent worker failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextlib.contextmanager
def _server() -> Any:
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


@contextlib.asynccontextmanager
async def _issuer(url: str) -> AsyncIterator[IssuerContext]:
    settings = IssuerSettings(redis_url=url, namespace=f"bench-rev-{uuid.uuid4().hex[:8]}", issuer=ISSUER,
                              kek=generate_kek_text(), heartbeat_interval="1h", token_ttl="1h")
    async with IssuerContext(settings, create=True) as ctx:
        try:
            await Rotator(ctx).tick()
            yield ctx
        finally:
            keys = [k async for k in ctx.redis.scan_iter(match=f"{{{settings.namespace}}}:*")]
            for i in range(0, len(keys), 500):
                await ctx.redis.delete(*keys[i:i + 500])


def _pct(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def _appends(ctx: IssuerContext, count: int) -> list[float]:
    admin, took = Admin(ctx), []

    async def heartbeat(state: State, now: float) -> list[tuple[str, dict[str, Any]]]:
        return [(str(EventType.HEARTBEAT), {})]

    for i in range(count):
        began = time.perf_counter()
        if i % 2:
            await ctx.log.commit(heartbeat)
        else:
            await admin.revoke_token(f"single-{i}-{secrets.token_urlsafe(8)}", int(time.time()) + 1800)
        took.append(time.perf_counter() - began)
    return took


async def _until(agent: VerifierAgent, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while agent.status().revoked_tokens < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent holds {agent.status().revoked_tokens} of {count} revocations")
        await asyncio.sleep(0.005)


async def measure(url: str, n: int, appends: int, reference: bool) -> dict[str, Any]:
    async with _issuer(url) as ctx:
        anchor = ctx.control.anchor.thumbprint
        follower = VerifierAgent(VerifierSettings(redis_url=url, namespace=ctx.settings.namespace, issuer=ISSUER,
                                                  audience="bench", trust_anchor=anchor, presence=False))
        await follower.start()
        now = int(time.time())
        tokens = [(secrets.token_urlsafe(16), now + 600 + i % 2400) for i in range(n)]
        began = time.perf_counter()
        await Admin(ctx).revoke_tokens(tokens)
        appended = time.perf_counter() - began
        await _until(follower, n, 300)
        bulk = time.perf_counter() - began
        await follower.stop()
        checkpoint = int(await ctx.redis.strlen(ctx.names.snapshot))
        sign = min(timeit.repeat(lambda: ctx.control.signing_key.sign(b"x" * 600), number=20, repeat=3)) / 20
        await _appends(ctx, 20)  # warm-up: connections, caches, the allocator
        samples = await _appends(ctx, appends)
        for attempt in range(3):  # the agents below start with every revocation in it
            try:
                await ctx.log.checkpoint(force=True)
                break
            except RedisError:
                if attempt == 2:
                    raise
        probes = Path(f"/tmp/keyherald-bench-probes-{uuid.uuid4().hex[:8]}.json")
        probes.write_text(json.dumps([jti for jti, _ in tokens[:: max(1, n // 1000)]]))
        try:
            agent = _agent(url, ctx.settings.namespace, anchor, probes, "compact")
            agent["traced"] = _agent(url, ctx.settings.namespace, anchor, probes, "compact", traced=True)["bytes"]
            ref: dict[str, Any] = {}
            if reference:
                ref = _agent(url, ctx.settings.namespace, anchor, probes, "reference")
                ref["traced"] = _agent(url, ctx.settings.namespace, anchor, probes, "reference", traced=True)["bytes"]
        finally:
            probes.unlink()
    p50, p99 = _pct(samples)
    return {"n": n, "bulk": bulk, "appended": appended, "rate": n / bulk, "p50": p50, "p99": p99,
            "sign": sign * 1000, "checkpoint": checkpoint, "agent": agent, "reference": ref}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| live revocations | append p50 / p99 (ms) | bulk revoke, end to end | checkpoint | agent bootstrap "
        "| agent memory per revocation (RSS / heap) | lookup hit / miss |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a, ref = r["agent"], r["reference"]
        lines.append(
            f"| {r['n']:,} | {r['p50']:.2f} / {r['p99']:.2f} | {r['bulk']:.2f} s ({r['rate']:,.0f}/s) "
            f"| {r['checkpoint'] / 1e6:.1f} MB | {a['bootstrap'] * 1000:.0f} ms "
            f"| {a['bytes']:.0f} B / {a['traced']:.0f} B | {a['hit_ns']:.0f} / {a['miss_ns']:.0f} ns |"
        )
        if ref:
            lines.append(
                f"| {r['n']:,}, previous agent store | | | | {ref['bootstrap'] * 1000:.0f} ms "
                f"| {ref['bytes']:.0f} B / {ref['traced']:.0f} B | {ref['hit_ns']:.0f} / {ref['miss_ns']:.0f} ns |"
            )
    sign = statistics.median(r["sign"] for r in rows)
    lines.append("")
    lines.append(f"Control-key signature alone (PS256, the floor of an append): {sign:.2f} ms.")
    return "\n".join(lines)


async def run(sizes: list[int], appends: int, *, reference: bool = True) -> str:
    rows = []
    with _server() as url:
        for n in sizes:
            row = await measure(url, n, appends, reference)
            print(f"  n={n:,}: {json.dumps(row)}", file=sys.stderr)
            rows.append(row)
    return table(rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--agent-worker":
        worker = argparse.ArgumentParser()
        for name in ("url", "namespace", "anchor", "probes", "store"):
            worker.add_argument(name)
        worker.add_argument("--traced", action="store_true")
        print(json.dumps(asyncio.run(_agent_worker(worker.parse_args(sys.argv[2:])))))
        return
    parser = argparse.ArgumentParser(description="Revocations at scale: issuer appends and agent store.")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated live revocation counts")
    parser.add_argument("--appends", type=int, default=400, help="appends timed per size")
    parser.add_argument("--no-reference", action="store_true", help="skip the previous agent store")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    print(asyncio.run(run(sizes, args.appends, reference=not args.no_reference)))


if __name__ == "__main__":
    main()
