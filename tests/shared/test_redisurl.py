"""The Redis URL forms: each topology parsed as users write it, bad ones refused without the password."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from keyherald.shared.connect import build_client, read_target
from keyherald.shared.errors import SettingsError
from keyherald.shared.names import Names
from keyherald.shared.redisurl import Topology, parse_redis_url, pick


def test_a_sentinel_url_names_its_sentinels_service_db_and_acl_user() -> None:
    target = parse_redis_url("redis+sentinel://agent:s3cret@h1:26379,h2:26380/mymaster/2?sentinel_password=sp")
    assert target.topology is Topology.SENTINEL
    assert target.hosts == (("h1", 26379), ("h2", 26380))
    assert (target.service, target.db, target.username, target.password) == ("mymaster", 2, "agent", "s3cret")
    assert target.sentinel_connection_options() == {"password": "sp"}
    assert "s3cret" not in target.redacted and "s3cret" not in repr(target)


def test_a_password_alone_and_tls_options() -> None:
    target = parse_redis_url("rediss+sentinel://:pw@h1/svc?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required")
    assert (target.username, target.password, target.hosts, target.tls) == (None, "pw", (("h1", 26379),), True)
    options = target.connection_options()
    assert options["ssl"] is True and options["ssl_ca_certs"] == "/ca.pem"


def test_a_cluster_url_and_several_plain_servers() -> None:
    cluster = parse_redis_url("redis+cluster://n1:7000,n2:7001")
    assert cluster.topology is Topology.CLUSTER and len(cluster.hosts) == 2
    replicas = parse_redis_url("redis://r1:6380,r2:6381/0")
    assert replicas.topology is Topology.SINGLE and replicas.hosts == (("r1", 6380), ("r2", 6381))


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel://:topsecret@h1:26379", "names no service"),
    ("mysql://:topsecret@h1", "unknown scheme"),
    ("redis://:topsecret@h1:port", "port that is not a number"),
    ("redis://:topsecret@h1/zero", "database that is not a number"),
    ("redis+cluster://:topsecret@h1:7000/3", "database other than 0"),
    ("redis://:topsecret@h1?nonsense=1", "unknown option"),
    ("redis://:topsecret@h1?sentinel_password=x", "not a redis+sentinel"),
    ("h1:6379", "is not a URL"),
])
def test_a_bad_url_is_refused_plainly_without_its_password(url: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_redis_url(url)
    assert problem in str(caught.value)
    assert "topsecret" not in str(caught.value) and caught.value.setting == "KEYHERALD_REDIS_URL"


def test_agents_spread_over_replicas_and_each_keeps_to_one() -> None:
    counts = [0, 0, 0]
    for n in range(3000):
        counts[pick(3, f"agent-{n}")] += 1
    assert min(counts) > 900
    assert pick(3, "agent-7") == pick(3, "agent-7")


async def test_each_topology_gets_redis_pys_own_client() -> None:
    sentinel = build_client("redis+sentinel://h1:26379/svc", role="replica", seed="a")
    assert isinstance(sentinel, Redis) and not sentinel.connection_pool.is_master  # type: ignore[attr-defined]
    cluster = build_client("redis+cluster://127.0.0.1:1")
    assert isinstance(cluster, RedisCluster)
    await cluster.aclose()
    assert read_target("redis+sentinel://h1/svc", "replicas")[1] == "replica"
    assert read_target("redis://h1", None)[1] == "primary"


def test_every_key_of_a_namespace_shares_one_hash_slot() -> None:
    from redis.crc import key_slot

    names = Names("tenant-a")
    keys = [getattr(names, a) for a in dir(Names) if isinstance(getattr(Names, a), property)]
    assert len(keys) >= 9
    keys += [names.presence("agent-1"), names.ratelimit("client", "x")]
    assert len({key_slot(k.encode()) for k in keys}) == 1
