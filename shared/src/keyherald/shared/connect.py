"""The one place that turns a Redis URL into a redis-py client, for every topology.

Callers (the issuer, the ``keyherald`` command, the agent, the tests and benches) never call
``from_url`` or build a ``Redis`` themselves: they say which role they need (the primary, to
write; or a replica, to follow) and which connection options (timeouts, decoding), and get
redis-py's own client for the topology: ``Redis`` (one server, or Sentinel's primary or a
replica through ``redis.asyncio.sentinel``) or ``RedisCluster``.

A plain ``redis://`` URL is asked whether it is a cluster node (``INFO cluster``), so that
pointing keyherald at any node of a cluster works as users expect. Every namespace's keys
share one hash slot (``{ns}``), so the Lua scripts and pipelines work unchanged there.

The client type is given as ``Redis``: ``RedisCluster`` answers every command keyherald sends
(keys of one slot each), and the code that needs a raw connection asks :func:`node_client`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal, cast

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SlaveNotFoundError
from redis.cluster import LoadBalancingStrategy
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import SettingsError
from .redisurl import REPLICAS, RedisTarget, Topology, parse_redis_url, pick

__all__ = [
    "Role", "build_client", "close_client", "is_cluster", "node_client", "open_client", "read_target", "sync_client",
]

log = logging.getLogger("keyherald.redis")

Role = Literal["primary", "replica"]


class _ReplicaPool(SentinelConnectionPool):
    """Sentinel's replicas, tried from one picked by the agent's seed (so a fleet spreads over
    them and each agent keeps to one), then the others, then the primary."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        self._seed = str(kwargs.pop("replica_seed", ""))
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]

    async def rotate_slaves(self) -> AsyncIterator[tuple[str, int]]:
        found = sorted(await self.sentinel_manager.discover_slaves(self.service_name))
        if found:
            start = pick(len(found), self._seed)
            for address in found[start:] + found[:start]:
                yield address
        try:
            yield await self.get_master_address()  # type: ignore[no-untyped-call]
        except RedisError:
            pass
        raise SlaveNotFoundError(f"no replica of {self.service_name!r} found")


def _sentinel_client(target: RedisTarget, role: Role, seed: str, options: dict[str, Any]) -> Redis:
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel_options.update(target.sentinel_connection_options())
    data = {**target.connection_options(), **options}
    data.pop("blocking_timeout", None)  # Sentinel's pool does not block for a free connection
    manager = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_options, **data)  # type: ignore[no-untyped-call]
    if role == "primary":
        return cast(Redis, manager.master_for(target.service))
    return cast(Redis, manager.slave_for(target.service, connection_pool_class=_ReplicaPool, replica_seed=seed))


def _cluster_client(target: RedisTarget, role: Role, options: dict[str, Any]) -> Redis:
    data = {**target.connection_options(), **options}
    data.pop("db", None)
    data.pop("blocking_timeout", None)
    data.pop("health_check_interval", None)
    data.pop("retry_on_timeout", None)
    max_connections = int(data.pop("max_connections", 64))
    nodes = [ClusterNode(host, port) for host, port in target.hosts]
    # A follower on replicas reads from the shard's replicas only (in turn), never its primary.
    balance = LoadBalancingStrategy.ROUND_ROBIN_REPLICAS if role == "replica" else None
    client = RedisCluster(
        startup_nodes=nodes, load_balancing_strategy=balance, max_connections=max_connections,
        require_full_coverage=False, **data,
    )
    return cast(Redis, client)


def build_client(target: RedisTarget | str, *, role: Role = "primary", seed: str = "", **options: Any) -> Redis:
    """A client for ``target`` without asking the server anything (a plain URL is taken as one
    server; :func:`open_client` also finds out whether it is a cluster node). ``options`` are
    redis-py connection options (``decode_responses``, ``socket_timeout``, ``retry``...);
    ``seed`` picks among several servers (an agent passes its id)."""
    if isinstance(target, str):
        target = parse_redis_url(target)
    if target.topology is Topology.SENTINEL:
        return _sentinel_client(target, role, seed, options)
    if target.topology is Topology.CLUSTER:
        return _cluster_client(target, role, options)
    if target.topology is Topology.UNIX:
        return Redis.from_url(target.url, **options)
    host, port = target.hosts[pick(len(target.hosts), seed)]
    pool_options = {**target.connection_options(), **options}
    blocking = pool_options.pop("blocking_timeout", None)
    if blocking is not None:
        from redis.asyncio import BlockingConnectionPool
        from redis.asyncio.connection import SSLConnection

        if pool_options.pop("ssl", False):
            pool_options["connection_class"] = SSLConnection
        pool = BlockingConnectionPool(host=host, port=port, timeout=blocking, **pool_options)
        return Redis(connection_pool=pool)
    return Redis(host=host, port=port, **pool_options)


async def is_cluster(client: Redis) -> bool:
    """Does this server say it is a cluster node? (An ACL that forbids INFO: assume not.)"""
    try:
        info = await client.info("cluster")
    except ResponseError:
        return False
    return bool(int(str(info.get("cluster_enabled", 0)) or 0))


async def open_client(
    url: str | RedisTarget, *, role: Role = "primary", seed: str = "", setting: str = "KEYHERALD_REDIS_URL",
    detect_cluster: bool = True, **options: Any,
) -> Redis:
    """:func:`build_client`, and for a plain ``redis://`` URL of one server, a
    ``RedisCluster`` instead if that server is a cluster node."""
    target = url if isinstance(url, RedisTarget) else parse_redis_url(url, setting=setting)
    client = build_client(target, role=role, seed=seed, **options)
    if not detect_cluster or target.topology is not Topology.SINGLE or len(target.hosts) != 1:
        return client
    try:
        clustered = await is_cluster(client)
    except (RedisError, OSError, RedisTimeoutError):
        return client  # unreachable now: the caller finds out and says so as it always has
    if not clustered:
        return client
    await close_client(client)
    log.info("%s is a cluster node: using RedisCluster", target.redacted)
    return _cluster_client(target, role, options)


def read_target(redis_url: str, read_url: str | None) -> tuple[RedisTarget, Role]:
    """Where an agent follows the log from: KEYHERALD_REDIS_READ_URL (``replicas``: the
    replicas of KEYHERALD_REDIS_URL's Sentinel service or cluster; a ``redis+sentinel://``
    URL: a replica of that service; any other URL: that server, or one of several), else the
    primary of KEYHERALD_REDIS_URL."""
    primary = parse_redis_url(redis_url)
    if read_url is None or not read_url.strip():
        return primary, "primary"
    if read_url.strip().lower() == REPLICAS:
        if primary.topology is Topology.UNIX:
            raise SettingsError("KEYHERALD_REDIS_READ_URL", "'replicas' needs a Sentinel or cluster URL")
        return primary, "replica"
    target = parse_redis_url(read_url, setting="KEYHERALD_REDIS_READ_URL")
    return target, "replica" if target.topology in (Topology.SENTINEL, Topology.CLUSTER) else "primary"


@functools.cache
def _redis_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(Redis.__init__).parameters)


def node_client(client: Redis, key: str) -> Redis:
    """A plain client for the server that holds ``key`` (the client itself, unless it is a
    cluster): for code that drives a connection by hand (the token endpoint's batcher)."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(key)
        if node is None:
            raise SettingsError("KEYHERALD_REDIS_URL", "the cluster has no node for this namespace's slot")
        accepted = _redis_parameters() - {"host", "port", "connection_pool"}
        return Redis(host=node.host, port=node.port, **{
            k: v for k, v in node.connection_kwargs.items() if k in accepted})
    return client


async def close_client(client: Redis) -> None:
    """Close a client built here and its connections, whatever its type."""
    if isinstance(client, RedisCluster):
        await client.aclose()
    else:
        await client.aclose(close_connection_pool=True)


def sync_client(url: str, **options: Any) -> SyncRedis:
    """A blocking client of the primary (tools, tests and benches that are not async)."""
    from redis.cluster import ClusterNode as SyncNode
    from redis.cluster import RedisCluster as SyncCluster
    from redis.sentinel import Sentinel as SyncSentinel

    target = parse_redis_url(url)
    data = {**target.connection_options(), **options}
    if target.topology is Topology.SENTINEL:
        sentinels = SyncSentinel(  # type: ignore[no-untyped-call]
            list(target.hosts), sentinel_kwargs=target.sentinel_connection_options(), **data)
        return cast(SyncRedis, sentinels.master_for(target.service))  # type: ignore[no-untyped-call]
    if target.topology is Topology.CLUSTER:
        data.pop("db", None)
        nodes = [SyncNode(host, port) for host, port in target.hosts]  # type: ignore[no-untyped-call]
        return cast(SyncRedis, SyncCluster(startup_nodes=nodes, **data))
    if target.topology is Topology.UNIX:
        return SyncRedis.from_url(target.url, **options)
    host, port = target.hosts[0]
    return SyncRedis(host=host, port=port, **data)
