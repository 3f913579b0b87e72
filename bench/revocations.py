"""Revocations at scale (issue 13): what N live revocations cost the issuer and every agent.

    uv run python bench/revocations.py                       # 1k, 10k, 100k, 1M; embedded Valkey
    uv run python bench/revocations.py --sizes 1000,10000 --appends 100
    KEYHERALD_TEST_REDIS_URL=redis://127.0.0.1:6379/0 uv run python bench/revocations.py

For each N, in a namespace of its own, with the issuer's default control key (RSA-3072, PS256):

- bulk: ``Admin.revoke_tokens`` of N tokens (``tokens.revoked`` chunks, one append, then a
  checkpoint), timed until an agent following the log counts all N in ``status()``: the
  operator's end-to-end time, and its tokens per second;
- append p50 / p99 with N live: single ``token.revoked`` and ``heartbeat`` appends in turn
  (a heartbeat prunes), through ``EventLog.commit``, one at each size in turn (every size's
  log is set up first), beside the control key's bare signing time (the floor of an append);
- checkpoint: its bytes in Redis (``STRLEN``), the time to write it, and the longest the
  issuer's event loop went without running meanwhile (sealing runs on a thread);
- agent, in fresh processes: bootstrap (``VerifierAgent.start()`` until ready, from the
  checkpoint; the best of ``--runs``), memory per revocation (RSS growth, and tracemalloc's
  live heap in another run), and a revocation lookup (``jti in state.revoked_tokens``, a hit
  and a miss, the loop's own cost taken off);
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
import resource
import secrets
import statistics
import subprocess
import sys
import time
import timeit
import tracemalloc
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.exceptions import RedisError

from bench.propagation import fresh_issuer
from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.shared.events import EventType
from keyherald.shared.revocations import TokenGroups, TokenSet, group_items, next_generation
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
    def from_groups(cls, groups: TokenGroups) -> ReferenceStore:
        return cls(group_items(groups))

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
    job = {"url": url, "namespace": namespace, "anchor": anchor, "probes": str(probes), "store": store,
           "traced": traced}  # one JSON argument: a thumbprint may start with '-'
    done = subprocess.run([sys.executable, __file__, "--agent-worker", json.dumps(job)], capture_output=True,
                          text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"agent worker failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _pct(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def _append(ctx: IssuerContext, i: int) -> float:
    """One append: a ``token.revoked`` or (every other) a ``heartbeat``, which prunes."""

    async def heartbeat(state: State, now: float) -> list[tuple[str, dict[str, Any]]]:
        return [(str(EventType.HEARTBEAT), {})]

    began = time.perf_counter()
    if i % 2:
        await ctx.log.commit(heartbeat)
    else:
        await Admin(ctx).revoke_token(f"single-{i}-{secrets.token_urlsafe(8)}", int(time.time()) + 1800)
    return time.perf_counter() - began


async def _until(agent: VerifierAgent, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while agent.status().revoked_tokens < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent holds {agent.status().revoked_tokens} of {count} revocations")
        await asyncio.sleep(0.005)


async def _checkpoint(ctx: IssuerContext) -> tuple[float, float]:
    """Write the checkpoint (retried on a busy server); its time, and the longest the event
    loop went without running a ready task meanwhile (what appends would have waited)."""
    stall, done = [0.0], asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stall[0] = max(stall[0], now - last - 0.001)
            last = now

    task = asyncio.create_task(ticker())
    began = time.perf_counter()
    try:
        for attempt in range(3):
            try:
                await ctx.log.checkpoint(force=True)
                break
            except RedisError:
                if attempt == 2:
                    raise
    finally:
        took = time.perf_counter() - began
        done.set()
        await task
    return took, stall[0]


async def _prepare(ctx: IssuerContext, n: int) -> dict[str, Any]:
    """Revoke ``n`` tokens in bulk, timed until an agent following the log counts them all."""
    url, anchor = ctx.settings.redis_url, ctx.control.anchor.thumbprint
    follower = VerifierAgent(VerifierSettings(redis_url=url, namespace=ctx.settings.namespace, issuer=ISSUER,
                                              audience="bench", trust_anchor=anchor, presence=False))
    await follower.start()
    now = int(time.time())
    tokens = [(secrets.token_urlsafe(16), now + 600 + i % 2400) for i in range(n)]
    began = time.perf_counter()
    await Admin(ctx).revoke_tokens(tokens)
    await _until(follower, n, 300)
    bulk = time.perf_counter() - began
    await follower.stop()
    return {"n": n, "bulk": bulk, "rate": n / bulk, "probes": [jti for jti, _ in tokens[:: max(1, n // 1000)]]}


async def _agents(ctx: IssuerContext, probes: list[str], reference: bool, runs: int) -> dict[str, Any]:
    """Each store's figures from fresh processes, alternating; bootstrap is the best of ``runs``."""
    path = Path(f"/tmp/keyherald-bench-probes-{uuid.uuid4().hex[:8]}.json")
    path.write_text(json.dumps(probes))
    url, namespace, anchor = ctx.settings.redis_url, ctx.settings.namespace, ctx.control.anchor.thumbprint
    stores = ["compact", "reference"] if reference else ["compact"]
    results: dict[str, dict[str, Any]] = {}
    try:
        for _ in range(runs):
            for store in stores:
                got = _agent(url, namespace, anchor, path, store)
                held = results.setdefault(store, got)
                held["bootstrap"] = min(held["bootstrap"], got["bootstrap"])
        for store in stores:
            results[store]["traced"] = _agent(url, namespace, anchor, path, store, traced=True)["bytes"]
    finally:
        path.unlink()
    return results


def _sign_ms(ctx: IssuerContext) -> float:
    key = ctx.control.signing_key
    return min(timeit.repeat(lambda: key.sign(b"x" * 600), number=20, repeat=3)) / 20 * 1000


async def run_all(url: str, sizes: list[int], appends: int, reference: bool, runs: int) -> list[dict[str, Any]]:
    async with contextlib.AsyncExitStack() as stack:
        contexts = [await stack.enter_async_context(fresh_issuer(url, token_ttl="1h")) for _ in sizes]
        rows = []
        for ctx, n in zip(contexts, sizes, strict=True):
            rows.append(await _prepare(ctx, n))
            print(f"  n={n:,}: bulk {rows[-1]['bulk']:.2f} s", file=sys.stderr)
        # Appends at every size in turn, the order rotating: a busier moment weighs on all alike.
        samples: list[list[float]] = [[] for _ in sizes]
        for i in range(20 + appends):
            order = list(range(len(sizes)))
            order = order[i % len(order):] + order[: i % len(order)]
            for k in order:
                took = await _append(contexts[k], i)
                if i >= 20:  # the first rounds warm connections, caches and the allocator up
                    samples[k].append(took)
        for ctx, row, taken in zip(contexts, rows, samples, strict=True):
            row["p50"], row["p99"] = _pct(taken)
            row["checkpoint_s"], row["stall"] = await _checkpoint(ctx)
            row["checkpoint"] = int(await ctx.redis.strlen(ctx.names.snapshot))
            row["sign"] = _sign_ms(ctx)
            agents = await _agents(ctx, row.pop("probes"), reference, runs)
            row["agent"], row["reference"] = agents["compact"], agents.get("reference", {})
            print(f"  n={row['n']:,}: {json.dumps(row)}", file=sys.stderr)
        return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| live revocations | append p50 / p99 (ms) | bulk revoke, end to end | checkpoint: bytes, write, "
        "longest loop stall | agent bootstrap | agent memory per revocation (RSS / heap) | lookup hit / miss |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a, ref = r["agent"], r["reference"]
        lines.append(
            f"| {r['n']:,} | {r['p50']:.2f} / {r['p99']:.2f} | {r['bulk']:.2f} s ({r['rate']:,.0f}/s) "
            f"| {r['checkpoint'] / 1e6:.1f} MB, {r['checkpoint_s']:.2f} s, {r['stall'] * 1000:.0f} ms "
            f"| {a['bootstrap'] * 1000:.0f} ms "
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


async def run(sizes: list[int], appends: int, *, reference: bool = True, runs: int = 3) -> str:
    from tests.servers import server_url  # KEYHERALD_TEST_REDIS_URL, or an embedded Valkey

    with server_url() as url:
        return table(await run_all(url, sizes, appends, reference, runs))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--agent-worker":
        print(json.dumps(asyncio.run(_agent_worker(argparse.Namespace(**json.loads(sys.argv[2]))))))
        return
    parser = argparse.ArgumentParser(description="Revocations at scale: issuer appends and agent store.")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated live revocation counts")
    parser.add_argument("--appends", type=int, default=400, help="appends timed per size")
    parser.add_argument("--no-reference", action="store_true", help="skip the previous agent store")
    parser.add_argument("--runs", type=int, default=3, help="agent bootstraps per store (the best is shown)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    print(asyncio.run(run(sizes, args.appends, reference=not args.no_reference, runs=args.runs)))


if __name__ == "__main__":
    main()
