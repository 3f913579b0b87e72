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
from typing import Any

from faststream import FastStream
from faststream.redis import RedisBroker, RedisClusterBroker, RedisSentinelBroker

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.redisurl import Topology, parse_redis_url

from .runtime import IssuerRuntime
from .settings import IssuerSettings

__all__ = ["create_worker"]

log = logging.getLogger("keyherald.issuer")


def _broker(url: str, logger: logging.Logger) -> RedisBroker:
    """FastStream's broker for the app's lifecycle (it consumes nothing), of the topology the
    URL names, from the parts :mod:`keyherald.shared.redisurl` parsed (never re-parsed here)."""
    target = parse_redis_url(url)
    wanted = {"username", "password", "db", "ssl"}
    auth: dict[str, Any] = {k: v for k, v in target.connection_options().items() if k in wanted}
    if target.topology is Topology.SENTINEL:
        return RedisSentinelBroker(
            sentinels=list(target.hosts), sentinel_master_name=target.service,
            sentinel_kwargs=target.sentinel_connection_options(), log_level=logging.DEBUG, logger=logger, **auth,
        )
    if target.topology is Topology.CLUSTER:
        host, port = target.hosts[0]
        auth.pop("db", None)
        return RedisClusterBroker(host=host, port=port, log_level=logging.DEBUG, logger=logger, **auth)
    if target.topology is Topology.SINGLE and len(target.hosts) > 1:
        host, port = target.hosts[0]
        return RedisBroker(host=host, port=port, log_level=logging.DEBUG, logger=logger, **auth)
    return RedisBroker(target.url, log_level=logging.DEBUG, logger=logger)


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
    broker = _broker(settings.redis_url, faststream_log)

    async def started() -> None:
        await runtime.start()
        log.info("issuer %s: replica %s started", settings.issuer, runtime.replica_id)

    app = FastStream(broker, logger=faststream_log, on_startup=[started], after_shutdown=[runtime.stop])
    return app, runtime
