"""Prometheus metrics of an agent, for the service's own registry (and its own /metrics).

    from prometheus_client import REGISTRY
    from keyherald.verifier.metrics import AgentCollector

    REGISTRY.register(AgentCollector(agent))

Opt-in (the ``metrics`` extra: ``keyherald-verifier[metrics]``). Nothing is counted on the
``verify`` path for it: the collector reads, at scrape time, the counters the validator and
the follower keep anyway. Only the propagation histogram is fed as events are applied, by
the follower, off the request path. Labels are bounded: reasons and outcomes, never a
token, a jti or a subject.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - the message is the point
    raise ImportError(
        "keyherald.verifier.metrics needs prometheus_client: install keyherald-verifier[metrics]"
    ) from None

from keyherald.shared.events import Event

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .agent import VerifierAgent

__all__ = ["PROPAGATION_BUCKETS", "AgentCollector"]

PROPAGATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds from an event's time at the issuer to the moment this agent applied it."""


class _Histogram:
    """Counts per bucket, fed by the follower, read by scrapes (a lock: they are threads)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, value)] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        buckets, running = [], 0
        for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), float(running)))
        return buckets, total


class AgentCollector(Collector):
    def __init__(self, agent: VerifierAgent, *, prefix: str = "keyherald_agent") -> None:
        self._agent = agent
        self._prefix = prefix
        self._propagation = _Histogram(PROPAGATION_BUCKETS)
        agent._signed.listeners.append(self._applied)

    def _applied(self, event: Event) -> None:
        self._propagation.observe(max(0.0, self._agent._clock() - event.time))

    def collect(self) -> Iterator[Metric]:
        p, agent = self._prefix, self._agent
        status = agent.status()
        tokens = status.tokens
        refusals = {k.removeprefix("refused."): v for k, v in tokens.items() if k.startswith("refused.")}
        verifications = CounterMetricFamily(
            f"{p}_verifications", "Tokens verified, by outcome and (for refusals) reason",
            labels=["outcome", "reason"],
        )
        verifications.add_metric(["accepted", ""], tokens.get("accepted", 0))
        for reason, count in sorted(refusals.items()):
            verifications.add_metric(["refused", reason], count)
        yield verifications
        yield CounterMetricFamily(f"{p}_cache_hits", "Verifications answered from the verified-token cache",
                                  value=tokens.get("cache_hits", 0))
        yield GaugeMetricFamily(f"{p}_seq", "Seq of the last event applied", value=status.seq)
        yield GaugeMetricFamily(f"{p}_staleness_seconds", "Seconds since the newest verified event (issuer time)",
                                value=status.age if status.age is not None else math.nan)
        yield GaugeMetricFamily(f"{p}_stale", "1 when no event came within the freshness bound",
                                value=1.0 if status.stale else 0.0)
        yield GaugeMetricFamily(f"{p}_refusing", "1 when every token is refused (past the staleness limit)",
                                value=1.0 if status.refusing else 0.0)
        yield GaugeMetricFamily(f"{p}_connected", "1 while following Redis", value=1.0 if status.connected else 0.0)
        refused = CounterMetricFamily(f"{p}_refused_events", "Log entries refused, by reason", labels=["reason"])
        for reason, count in sorted(status.refused_by_reason.items()):
            refused.add_metric([reason], count)
        yield refused
        for name, value, text in (
            ("resyncs", status.resyncs, "Catch-ups from a checkpoint of the same log"),
            ("resets", status.resets, "Moves to a newer log"),
            ("reconnects", status.reconnects, "Connections to Redis made again after a loss"),
            ("disconnects", status.disconnects, "Connections to Redis lost"),
        ):
            yield CounterMetricFamily(f"{p}_{name}", text, value=value)
        buckets, total = self._propagation.snapshot()
        yield HistogramMetricFamily(
            f"{p}_propagation_seconds", "From an event's issuer time to its application here",
            buckets=buckets, sum_value=total,
        )
