"""Metrics of this replica's appends to the log: how many, of which type, how long each took.

Fed by :attr:`EventLog.on_append <keyherald.issuer.eventlog.EventLog.on_append>` (the
replica wires it; the ``keyherald`` command does not import this module, nor Prometheus).
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Histogram

from keyherald.shared.events import Event

__all__ = ["APPENDS", "APPEND_SECONDS", "record_append"]

APPENDS = Counter("keyherald_log_appends", "Events this replica appended to the log, by type", ["type"])
APPEND_SECONDS = Histogram(
    "keyherald_log_append_duration_seconds", "Time of one append (the compare-and-set script), seconds",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


def record_append(events: Sequence[Event], seconds: float) -> None:
    for event in events:
        APPENDS.labels(event.type).inc()
    APPEND_SECONDS.observe(seconds)
