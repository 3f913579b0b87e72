"""GET /metrics: the replica's Prometheus metrics.

Counters live beside what they count (the token endpoint in :mod:`.token`, client
authentication in :mod:`.oauth`, appends in :mod:`keyherald.issuer.logmetrics`), in the
process's default registry. What is a reading of the replica's state (the head of the log,
leadership, the signing key's age, the fleet) is collected at scrape time by
:class:`RuntimeCollector`, one per app. Labels stay bounded: event types, OAuth error codes,
and client ids, which the registry bounds; never a token, a jti or a secret.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

from keyherald.shared.events import KeyState

from ..lifecycle import standby

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..runtime import IssuerRuntime

__all__ = ["RuntimeCollector", "metrics_response"]


class RuntimeCollector(Collector):
    def __init__(self, runtime: IssuerRuntime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime
        state = runtime.ctx.log.state if runtime.ctx.log_ready else None
        now = runtime.clock()
        yield GaugeMetricFamily("keyherald_log_head_seq", "Seq of the newest event this replica verified",
                                value=state.seq if state else 0)
        yield GaugeMetricFamily("keyherald_leader", "1 while this replica holds the leader lease",
                                value=1.0 if runtime.role == "leader" else 0.0)
        yield GaugeMetricFamily("keyherald_healthy", "1 while this replica can append (/healthz 200)",
                                value=1.0 if runtime.healthy else 0.0)
        active = state.active_key if state else None
        yield GaugeMetricFamily(
            "keyherald_signing_key_age_seconds", "Seconds since the active signing key started signing",
            value=(now - active.activated_at) if active and active.activated_at else math.nan,
        )
        nxt = standby(state) if state else None
        yield GaugeMetricFamily(
            "keyherald_next_rotation_seconds", "Seconds until the standby key is due to take over",
            value=(nxt.activates_at - now) if nxt and nxt.activates_at else math.nan,
        )
        yield GaugeMetricFamily("keyherald_revoked_keys", "Keys the log holds revoked",
                                value=len(state.keys_in(KeyState.REVOKED)) if state else 0)
        if runtime.ctx.log_ready:
            eventlog = runtime.ctx.log
            yield CounterMetricFamily("keyherald_log_recoveries", "New logs this replica started to repair Redis",
                                      value=eventlog.recoveries)
            yield GaugeMetricFamily("keyherald_log_lost_unread",
                                    "Events removed from Redis before any writer read them (see /healthz)",
                                    value=len(eventlog.unread))
        fleet = runtime.fleet
        agents = GaugeMetricFamily("keyherald_fleet_agents", "Agents reporting presence, by state", labels=["state"])
        agents.add_metric(["live"], len(fleet.live) if fleet else 0)
        agents.add_metric(["lost"], len(fleet.lost) if fleet else 0)
        agents.add_metric(["stale"], sum(1 for a in fleet.live if a.record.stale) if fleet else 0)
        yield agents
        events, seconds = fleet.max_lag if fleet else (0, 0.0)
        yield GaugeMetricFamily("keyherald_fleet_max_lag_events", "Events the furthest-behind live agent lacks",
                                value=events)
        yield GaugeMetricFamily("keyherald_fleet_max_lag_seconds",
                                "Issuer time the furthest-behind live agent trails the head by", value=seconds)


def metrics_response(registry: CollectorRegistry) -> Response:
    body = generate_latest(REGISTRY) + generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
