"""The issuer worker: a FastStream app around one :class:`IssuerRuntime`.

FastStream owns the process lifecycle (signals, start-up and shut-down hooks). The replica
follows the log with its own verifier agent (the one that checks admin tokens): every event
it applies makes the token signer pick up the active key at once, wherever the leader runs.
(FastStream's stream subscriber used to do that; when someone made the stream another type
of key, its supervisor restarted the failing read in a tight loop, a wedge the agent's
follower, which backs off, does not have.)
"""

from __future__ import annotations

import logging

from faststream import FastStream

from keyherald.shared.clock import Clock, system_clock

from .runtime import IssuerRuntime
from .settings import IssuerSettings

__all__ = ["create_worker"]

log = logging.getLogger("keyherald.issuer")


def create_worker(
    settings: IssuerSettings, *, clock: Clock = system_clock, serve_http: bool = True, accept_stale_log: bool = False,
    duties: bool = True, worker: int | None = None, reuse_port: bool = False,
) -> tuple[FastStream, IssuerRuntime]:
    """The app of one replica; ``duties``, ``worker`` and ``reuse_port``: see IssuerRuntime."""
    runtime = IssuerRuntime(settings, clock=clock, serve_http=serve_http, accept_stale_log=accept_stale_log,
                            duties=duties, worker=worker, reuse_port=reuse_port)
    # FastStream's own loggers colour their lines whatever the output: ours format them
    # (text, coloured only on a terminal, or JSON; see keyherald.shared.logs).
    faststream_log = logging.getLogger("keyherald.faststream")
    # No broker: nothing is consumed (the log is followed by the replica's agent), and a
    # broker would be one more place that connects to Redis, blind to Sentinel and Cluster.

    async def started() -> None:
        await runtime.start()
        log.info("issuer %s: replica %s started", settings.issuer, runtime.replica_id)

    app = FastStream(logger=faststream_log, on_startup=[started], after_shutdown=[runtime.stop])
    return app, runtime
