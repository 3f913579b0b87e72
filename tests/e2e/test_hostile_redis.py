"""Someone who can write Redis, against keyherald as it is deployed.

Every test here is an attack an outside review made: real ``keyherald issuer run`` replicas,
agents in processes of their own, the real ``keyherald`` command, and a second Redis
connection as the attacker, who has full read/write access to Redis but neither the KEK nor
the control key. Each asserts the property a platform team relies on, not how it is kept.
"""

from __future__ import annotations

import time

import pytest
from redis import Redis

from keyherald.shared.connect import sync_client
from tests.procs import Fleet, skewed, wait_for

from .deployment import Deployment, token_of

pytestmark = pytest.mark.redis


def _revoked_everything(agent_refuses: dict[str, str | None]) -> bool:
    return all(reason is not None for reason in agent_refuses.values())


def test_a_rollback_never_brings_back_a_revoked_token_subject_or_key(
    deployment: Deployment, fleet: Fleet, attacker: Redis
) -> None:
    """The review's critical finding: put back an older genuine checkpoint and head, delete
    the stream. A fresh agent, an agent restarted from its cache, the command and a restarted
    issuer must never accept or sign with anything revoked since."""
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    orders, billing = d.client("orders"), d.client("billing")
    recorded = attacker.mget(d.names.snapshot, d.names.head)  # an older, genuine log
    recorded_at = time.monotonic()
    assert recorded[0] is not None
    cached = fleet.agent(d.agent_env("agent-cached", KEYHERALD_CACHE_PATH=str(d.root / "agent.cache")))
    assert cached.started

    by_key = token_of(issuer.token("orders", orders))
    leaked_kid = _kid(by_key)  # leaked: revoked first, then tokens from the key that replaces it
    code, _out, err = d.operator("revoke", "key", leaked_kid)
    assert code == 0, err
    by_jti = wait_for(lambda: (t := token_of(issuer.token("orders", orders))) and _kid(t) != leaked_kid and t,
                      5, "a token from the key that replaced the leaked one")
    by_subject = token_of(issuer.token("billing", billing))
    code, _out, err = d.operator("revoke", "token", "--token", "-", stdin=by_jti)
    assert code == 0, err
    assert d.operator("revoke", "subject", "billing")[0] == 0
    wait_for(lambda: cached.refuses(by_jti) and cached.refuses(by_subject) and cached.refuses(by_key), 5,
             "the revocations applied")
    wait_for(lambda: (d.root / "agent.cache").exists(), 5, "the agent's cache file")
    time.sleep(1.2)  # the cache file is written at most once a second

    # The attack, with no replica running to repair it (the worst case: a fleet restart). What
    # it puts back is older than the freshness bound (3 heartbeats + 2 s = 5 s here): a fresh
    # agent cannot tell a rollback to a more recent point from an idle issuer, and reports
    # stale once it is that old (docs/protocol.md).
    issuer.stop()
    cached.stop()
    time.sleep(max(0.0, recorded_at + 6 - time.monotonic()))
    attacker.mset({d.names.snapshot: recorded[0], d.names.head: recorded[1]})
    attacker.delete(d.names.events)

    # A fresh agent: the log Redis holds is not current, so it takes no token on it.
    fresh = fleet.agent(d.agent_env("agent-fresh"))
    assert not fresh.started and "rolled back" in str(fresh.ready)
    # The agent restarted with its cache file: its memory is the floor. Redis answers with an
    # older log, so its memory is loaded but not current: it takes no token until a fresh
    # event proves the issuer is there (an outage of Redis alone would let it start).
    again = fleet.agent(d.agent_env("agent-cached", KEYHERALD_CACHE_PATH=str(d.root / "agent.cache"),
                                    KEYHERALD_STARTUP_TIMEOUT="60s"), wait=False)
    # The operator's command builds on nothing older than it has seen.
    code, _, err = d.operator("revoke", "subject", "someone", "--force")
    assert code == 1 and "older than this host's record" in err
    # The issuer restarted on the same host: it refuses the log, says why, and signs nothing.
    restarted = fleet.issuer(d.host("issuer-1"))
    status, health = wait_for(lambda: restarted.health(), 20, "the restarted issuer's health")
    assert status == 503 and "older than this host's record" in health["problem"]
    response = restarted.token("orders", orders)
    assert response.status_code == 503  # the log's active key is the one it saw revoked

    # The operator decides: accept the older log on purpose. The revoked key stays revoked,
    # the restarted replica goes on, and agents that ran keep every revocation.
    assert again.starting()
    code, _out, err = d.operator("log", "accept", "--confirm", d.namespace, host="issuer-1")
    assert code == 0, err
    restarted.wait_healthy()
    assert again.wait_ready(20)  # the accepted log's events: current again, and it starts
    assert again.status()["refused_by_reason"].get("rollback") == 1
    assert again.refuses(by_jti) == "revoked" and again.refuses(by_subject) == "revoked"
    assert again.refuses(by_key) == "key_revoked"
    payments = d.client("payments")  # clients registered after that point went with it
    fresh_token = token_of(restarted.token("payments", payments))
    assert _kid(fresh_token) != leaked_kid
    assert again.status()["resets"] >= 1  # it adopted the accepted log
    assert again.refuses(by_jti) == "revoked" and again.refuses(by_subject) == "revoked"
    assert again.refuses(by_key) == "key_revoked" and again.refuses(fresh_token) is None
    # An agent started now holds the accepted log. The leaked key is revoked again in it; the
    # revocations of the token and the subject, made after the point Redis went back to, are
    # what docs/protocol.md says accepting a rollback costs agents that start afresh.
    late = fleet.agent(d.agent_env("agent-late"))
    assert late.started and late.refuses(fresh_token) is None
    assert late.refuses(by_key) == "key_revoked"


def _kid(token: str) -> str:
    import base64
    import json

    head = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"])


def test_a_running_replica_repairs_a_rollback_and_every_agent_keeps_its_revocations(
    deployment: Deployment, fleet: Fleet, attacker: Redis
) -> None:
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    orders = d.client("orders")
    recorded = attacker.mget(d.names.snapshot, d.names.head)
    running = fleet.agent(d.agent_env("agent-1"))
    token = token_of(issuer.token("orders", orders))
    assert d.operator("revoke", "subject", "orders", "--force")[0] == 0
    wait_for(lambda: running.refuses(token) == "revoked", 5, "the revocation applied")

    attacker.mset({d.names.snapshot: recorded[0], d.names.head: recorded[1]})
    attacker.delete(d.names.events)
    # Within a few ticks the replica starts a new log from what it holds; the agent adopts it.
    wait_for(lambda: running.status()["resets"] >= 1, 10, "the running agent adopting the repaired log")
    assert running.refuses(token) == "revoked"
    fresh = fleet.agent(d.agent_env("agent-2"))
    assert fresh.started and fresh.refuses(token) == "revoked"
    assert issuer.wait_healthy()["ok"]


def test_suppressed_events_leave_agents_visibly_stale_then_refusing(
    deployment: Deployment, fleet: Fleet, attacker: Redis
) -> None:
    """The stream kept a string, and every append undone at once: the revocation never reaches
    the agent and the operator is told it is not confirmed. The agent reports stale within the
    freshness bound (3 heartbeats + 2 s = 5 s here) and refuses every token once past its
    staleness limit (8 s here)."""
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    orders = d.client("orders")
    agent = fleet.agent(d.agent_env("agent-1", KEYHERALD_MAX_STALENESS="8s"))
    token = token_of(issuer.token("orders", orders))
    assert agent.refuses(token) is None and not agent.status()["stale"]

    import threading

    stop = threading.Event()

    def suppress() -> None:
        with sync_client(d.redis_url) as redis:
            while not stop.is_set():
                if redis.type(d.names.events) != b"string":
                    redis.delete(d.names.events)
                    redis.set(d.names.events, "suppressed")
                time.sleep(0.01)

    suppressor = threading.Thread(target=suppress, daemon=True)
    suppressor.start()
    try:
        time.sleep(0.3)
        code, _out, err = d.operator("revoke", "subject", "orders", "--force")
        # It reached Redis and was undone. Either a replica read it and built on it before that
        # (then it is carried into the log the replica starts), or the operator is told it is
        # not confirmed instead of being handed a confirmation.
        assert code == 0 or (code == 1 and "not confirmed" in err), err
        acknowledged = time.monotonic()
        deadline = acknowledged + 5 + 1.5
        while time.monotonic() < deadline:
            status = agent.status()
            if agent.refuses(token) is not None or status["stale"]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the agent accepted the revoked token and said it was fresh")
        wait_for(lambda: agent.refuses(token) == "stale", 10, "the agent refusing past its staleness limit")
        assert agent.status()["refusing"]
    finally:
        stop.set()
        suppressor.join(5)
    # Redis behaves again: the replica puts a log back and the agent follows it. Either a
    # replica read the revocation before it was removed (then it carries it into the log it
    # starts), or none did and no writer holds it any more: then the replica says so, on
    # /healthz and in its log, for the operator to run it again.
    def settled() -> str | None:
        if agent.refuses(token) == "revoked":
            return "carried"
        found = issuer.health()
        if found is not None and found[0] == 200 and found[1].get("lost_unread"):
            return "reported"
        return None

    if code == 0:  # confirmed: a replica holds it, so it must come back without a second run
        wait_for(lambda: agent.refuses(token) == "revoked", 15, "the confirmed revocation carried")
    elif wait_for(settled, 15, "the revocation carried, or reported lost") == "reported":
        wait_for(lambda: not agent.status()["refusing"], 15, "the agent current again")
        assert d.operator("revoke", "subject", "orders", "--force")[0] == 0
    wait_for(lambda: agent.refuses(token) == "revoked", 5, "the revocation enforced")


def test_an_event_spliced_from_an_old_log_is_refused_and_the_revocation_lands(
    deployment: Deployment, fleet: Fleet, attacker: Redis
) -> None:
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    orders = d.client("orders")
    old_log = attacker.xrange(d.names.events)
    attacker.delete(d.names.events)  # events lost: the replica starts a new log; now an old one exists
    agents = [fleet.agent(d.agent_env(f"agent-{i}")) for i in range(3)]
    wait_for(lambda: all(a.status()["log"] != _log_of(old_log) for a in agents), 10, "agents on the new log")
    token = token_of(issuer.token("orders", orders))
    for agent in agents:
        agent.pause()
    code, out, err = d.operator("revoke", "subject", "orders", "--force")
    assert code == 0, err
    seq = int(out.strip().rsplit(" ", 1)[1])
    # Splice: the real revocation out, an old log's genuine event in at its id.
    entries = attacker.xrange(d.names.events)
    attacker.delete(d.names.events)
    for entry_id, fields in entries:
        if entry_id.decode() != f"{seq}-0":
            attacker.xadd(d.names.events, fields, id=entry_id)
        else:
            attacker.xadd(d.names.events, old_log[min(2, len(old_log) - 1)][1], id=entry_id)
    for agent in agents:
        agent.resume()
    for agent in agents:
        wait_for(lambda a=agent: a.refuses(token) == "revoked", 10, "the revocation, spliced out, landing anyway")
        status = agent.status()
        assert status["log"] != _log_of(old_log) and not status["refusing"]


def _log_of(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> str:
    import base64
    import json

    body = entries[0][1][b"event"].split(b".")[1]
    return str(json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))["log"])


def test_a_client_record_put_back_brings_no_leaked_secret_back(
    deployment: Deployment, fleet: Fleet, attacker: Redis
) -> None:
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    leaked = d.client("orders")
    assert issuer.token("orders", leaked).status_code == 200
    saved = attacker.hget(d.names.clients, "orders")
    # The README's leaked-secret procedure.
    code, _out, err = d.operator("clients", "rotate-secret", "orders", "--json")
    assert code == 0, err
    assert d.operator("clients", "disable", "orders")[0] == 0
    assert d.operator("revoke", "subject", "orders")[0] == 0
    attacker.hset(d.names.clients, "orders", saved)
    response = issuer.token("orders", leaked)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("wedge", ["junk checkpoint", "junk head", "head behind the stream", "head with another digest",
                                   "rollback", "lease without a TTL", "wiped"])
def test_one_write_to_redis_does_not_wedge_the_issuer(
    deployment: Deployment, fleet: Fleet, attacker: Redis, wedge: str
) -> None:
    """Each used to stop every append (no heartbeats, rotations or revocations) while
    /healthz said 200. Now appends resume by themselves within a few ticks."""
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    orders = d.client("orders")
    recorded = attacker.mget(d.names.snapshot, d.names.head)
    agent = fleet.agent(d.agent_env("agent-1"))
    token = token_of(issuer.token("orders", orders))
    if wedge == "junk checkpoint":
        attacker.set(d.names.snapshot, "x" * 1000)
    elif wedge == "junk head":
        attacker.set(d.names.head, "not-a-head")
    elif wedge in ("head behind the stream", "head with another digest"):
        log_id, seq, head_digest = attacker.get(d.names.head).decode().split(":")
        other = ("A" if head_digest[0] != "A" else "B") + head_digest[1:]
        attacker.set(d.names.head, f"{log_id}:{int(seq) - 1}:{head_digest}" if wedge == "head behind the stream"
                     else f"{log_id}:{seq}:{other}")
    elif wedge == "rollback":
        attacker.mset({d.names.snapshot: recorded[0], d.names.head: recorded[1]})
        attacker.delete(d.names.events)
    elif wedge == "lease without a TTL":
        attacker.set(d.names.leader, "someone-else")
    elif wedge == "wiped":
        attacker.delete(*attacker.keys(f"{{{d.namespace}}}:*"))
    started = time.monotonic()
    wait_for(lambda: (h := issuer.health()) is not None and h[0] == 200 and h[1]["role"] == "leader", 10,
             "the replica leading and healthy again")
    # Revocations flow: the operator's, as soon as the command can append again...
    wait_for(lambda: d.operator("revoke", "subject", "orders", "--force", host="issuer-1")[0] == 0, 10,
             "an append by the command")
    wait_for(lambda: agent.refuses(token) == "revoked", 10, "the revocation reaching the agent")
    # ...and the leader's heartbeats: a fresh agent starts on a current log.
    fresh = fleet.agent(d.agent_env("agent-2"))
    assert fresh.started and fresh.refuses(token) == "revoked"
    assert time.monotonic() - started < 25
    if wedge == "junk checkpoint":
        assert attacker.get(d.names.snapshot) != b"x" * 1000  # written again from the replica's state
    if wedge == "wiped":
        assert attacker.get(d.names.control_key) is not None  # put back by the replica that held it


def test_replicas_clocks_4s_apart_agree_on_a_subject_cut_off(
    deployment: Deployment, fleet: Fleet, attacker: Redis
) -> None:
    """Two replicas at -4 s and +4 s (inside the 5 s allowed). A token from the fast one,
    issued 2 s before a subject revocation made through the slow one, is covered: both
    measure their clock against the Redis server's and use the corrected time."""
    d = deployment
    d.init()
    fast = fleet.issuer(skewed(d.host("issuer-fast"), +4))
    slow = fleet.issuer(skewed(d.host("issuer-slow"), -4))
    fast.wait_healthy()
    slow.wait_healthy()
    orders = d.client("orders")
    agent = fleet.agent(d.agent_env("agent-1"))
    token = token_of(fast.token("orders", orders))
    time.sleep(2)
    done = wait_for(lambda: _cli_ok(d, skewed(d.host("operator"), -4)), 10, "the revocation by the slow host")
    assert done
    wait_for(lambda: agent.refuses(token) == "revoked", 5, "the cut-off covering the fast replica's token")


def _cli_ok(d: Deployment, env: dict[str, str]) -> bool:
    from tests.procs import cli

    return cli(env, "revoke", "subject", "orders", "--force").returncode == 0
