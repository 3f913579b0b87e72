"""The trust anchor's life on real servers: a Redis that may evict, a Redis that forgets, a
backup and a restore, and junk written over the keys beside the log.

Each test that wipes Redis owns its server (tests.servers.EmbeddedValkey, no persistence):
stopping and starting it again is exactly "Redis restarted without its data".
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest
from redis import Redis

from keyherald.shared.connect import sync_client
from tests.procs import Fleet, wait_for
from tests.servers import EmbeddedValkey

from .deployment import Deployment, token_of

pytestmark = pytest.mark.redis


@pytest.fixture
def own(own_server: EmbeddedValkey, namespace: str, kek: str, tmp_path: Path) -> Deployment:
    return Deployment(own_server.url, namespace, kek, tmp_path)


def _wipe(server: EmbeddedValkey) -> None:
    server.stop()
    server.start()  # same port, no data


def test_a_redis_that_may_evict_keys_is_refused(own: Deployment, own_server: EmbeddedValkey, fleet: Fleet) -> None:
    d = own
    with sync_client(own_server.url) as admin:
        admin.config_set("maxmemory-policy", "allkeys-lru")
        code, _out, err = d.operator("issuer", "init", host="issuer-1")
        assert code == 2 and "maxmemory-policy" in err and "allkeys-lru" in err and "noeviction" in err
        assert not admin.exists(d.names.control_key)  # refused before anything was written
        admin.config_set("maxmemory-policy", "volatile-lru")  # keyherald's keys have no TTL: safe
        d.init()
        admin.config_set("maxmemory-policy", "allkeys-lfu")
        issuer = fleet.issuer(d.host("issuer-1"))
        wait_for(lambda: issuer.proc.poll() is not None, 20, "the issuer refusing to run")
        assert issuer.proc.returncode == 2 and "maxmemory-policy" in issuer.stderr()


def test_issuer_run_prepares_no_namespace_unless_told(deployment: Deployment, fleet: Fleet) -> None:
    """An empty namespace in production is a wrong URL or a Redis that lost its data: a new
    control key there would be a new trust anchor every agent refuses."""
    d = deployment
    issuer = fleet.issuer(d.host("issuer-1"))
    wait_for(lambda: issuer.proc.poll() is not None, 20, "the issuer refusing an empty namespace")
    assert issuer.proc.returncode != 0
    assert "keyherald issuer init" in issuer.stderr() and "KEYHERALD_CONTROL_KEY_FILE" in issuer.stderr()
    allowed = fleet.issuer(d.host("issuer-1", KEYHERALD_AUTO_INIT="true"))
    allowed.wait_healthy()


def test_redis_restarted_empty_with_the_control_key_file(
    own: Deployment, own_server: EmbeddedValkey, fleet: Fleet
) -> None:
    """The control key survives in its file: the restarted replica starts a new log signed by
    the same key, running agents adopt it with every revocation, fresh agents bootstrap on the
    anchor they were deployed with. A host that ran the namespace refuses to make a new key."""
    d = own
    key_file = d.root / "secrets" / "control-key"
    d.base["KEYHERALD_CONTROL_KEY_FILE"] = str(key_file)
    anchor = d.init()
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    secret = d.client("orders")
    running = fleet.agent(d.agent_env("agent-1"))
    revoked = token_of(issuer.token("orders", secret))
    code, _out, err = d.operator("revoke", "token", "--token", "-", stdin=revoked)
    assert code == 0, err
    wait_for(lambda: running.refuses(revoked) == "revoked", 5, "the revocation applied")

    issuer.stop()
    _wipe(own_server)
    restarted = fleet.issuer(d.host("issuer-1"))
    restarted.wait_healthy()
    wait_for(lambda: running.status()["resets"] >= 1, 10, "the running agent adopting the new log")
    # The signing keys went with Redis (the new log has new ones); the revocation is kept.
    assert running.refuses(revoked) is not None and running.status()["revoked_tokens"] == 1
    token_of(restarted.token("orders", d.client("orders")))  # the clients went too: created again
    fresh = fleet.agent(d.agent_env("agent-2"))
    assert fresh.started and d.anchor == anchor
    # Without the file, the same host makes no new control key either: its record says the
    # namespace was in use, so Redis lost it.
    restarted.stop()
    _wipe(own_server)
    del d.base["KEYHERALD_CONTROL_KEY_FILE"]
    code, _out, err = d.operator("issuer", "init", host="issuer-1")
    assert code != 0 and "ran the namespace before" in err


def test_backup_wipe_and_restore(own: Deployment, own_server: EmbeddedValkey, fleet: Fleet) -> None:
    d = own
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    secret = d.client("orders")
    running = fleet.agent(d.agent_env("agent-1"))
    before, after, kept = (token_of(issuer.token("orders", secret)) for _ in range(3))
    assert d.operator("revoke", "token", "--token", "-", stdin=before)[0] == 0
    backup = d.root / "backup.json"
    code, _out, err = d.operator("backup", str(backup))
    assert code == 0 and "backed up" in err, err
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    document = json.loads(backup.read_text())
    assert "BEGIN" not in backup.read_text() and "der" not in json.dumps(document["signing_keys"])
    assert d.operator("revoke", "token", "--token", "-", stdin=after)[0] == 0
    wait_for(lambda: running.refuses(after) == "revoked", 5, "the later revocation applied")

    issuer.stop()
    _wipe(own_server)
    # This host's record saw the later revocation: the older backup is refused unless accepted as such.
    code, out, err = d.operator("restore", str(backup), host="issuer-1")
    assert code == 1 and "further than the backup" in err and "--older" in err, err
    code, out, err = d.operator("restore", str(backup), "--older", "--confirm", d.namespace, host="issuer-1")
    assert code == 0 and "restored namespace" in out, err
    assert d.operator("restore", str(backup), host="issuer-1")[0] == 1  # once: the namespace holds a log now
    restarted = fleet.issuer(d.host("issuer-1"))
    restarted.wait_healthy()
    wait_for(lambda: running.status()["resets"] >= 1, 10, "the running agent adopting the restored log")
    # Running agents never roll back: both revocations stay applied.
    assert running.refuses(before) == "revoked" and running.refuses(after) == "revoked"
    assert running.refuses(kept) is None
    fresh_token = token_of(restarted.token("orders", secret))  # the restored client and keys
    assert running.refuses(fresh_token) is None
    # A fresh agent starts from the backup: it refuses what the backup held. The revocation
    # made after the backup is what docs/operations.md says a restore loses, for it alone.
    fresh = fleet.agent(d.agent_env("agent-2"))
    assert fresh.started and fresh.refuses(before) == "revoked" and fresh.refuses(fresh_token) is None
    assert fresh.refuses(after) is None


@pytest.mark.parametrize("tamper", ["events cut off", "head edited", "a signing key replaced", "tag removed"])
def test_an_altered_backup_is_refused_and_changes_nothing(
    own: Deployment, own_server: EmbeddedValkey, fleet: Fleet, tamper: str,
) -> None:
    """The file is tagged under the KEK as a whole: cutting the newest events off (and fixing
    its head to match) would have restored a log without the revocations in them."""
    d = own
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    secret = d.client("orders")
    token = token_of(issuer.token("orders", secret))
    assert d.operator("revoke", "token", "--token", "-", stdin=token)[0] == 0
    backup = d.root / "backup.json"
    assert d.operator("backup", str(backup))[0] == 0
    issuer.stop()
    document = json.loads(backup.read_text())
    if tamper in ("events cut off", "head edited"):
        cut = document["events"].pop()  # the revocation, or a heartbeat after it
        seq = json.loads(base64.urlsafe_b64decode(cut.split(".")[1] + "==")).get("seq", 1)
        log_id, _seq, _digest = document["head"].split(":")
        document["head"] = f"{log_id}:{seq - 1}:{_digest}" if tamper == "head edited" else document["head"]
    elif tamper == "a signing key replaced":
        kids = sorted(document["signing_keys"])
        document["signing_keys"][kids[0]] = document["signing_keys"][kids[-1]] if len(kids) > 1 else "{}"
    else:
        document["mac"] = ""
    backup.write_text(json.dumps(document))
    _wipe(own_server)
    code, _out, err = d.operator("restore", str(backup), host="fresh-host")
    assert code == 1 and ("altered" in err or "does not" in err), err
    with sync_client(d.redis_url) as check:
        assert not check.keys(f"{{{d.namespace}}}:*")


def test_junk_over_the_keys_beside_the_log_is_repaired_by_the_leader(
    deployment: Deployment, fleet: Fleet, redis_url: str
) -> None:
    """One write each: the control key made junk, then a list; the signing keys a string; the
    clients a string. The leader writes back what it holds and reports what it cannot; a
    replica started afterwards, and the command, work."""
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    secret = d.client("orders")
    with sync_client(redis_url) as attacker:
        attacker.set(d.names.control_key, "junk")
        wait_for(lambda: attacker.get(d.names.control_key) != b"junk", 10, "the control key written back")
        attacker.delete(d.names.control_key)
        attacker.rpush(d.names.control_key, "x")
        wait_for(lambda: attacker.type(d.names.control_key) == b"string", 10, "the control key written back")
        # A well-formed seal of another slot (a signing key's) over the control key: not "another
        # KEK" but junk to the leader, which holds the key the log names.
        kids = sorted(k.decode() for k in attacker.hkeys(d.names.signing_keys))
        sealed_key = attacker.hget(d.names.signing_keys, kids[0])
        attacker.set(d.names.control_key, sealed_key)
        wait_for(lambda: attacker.get(d.names.control_key) != sealed_key, 10, "the control key written back")
        # One signing key's field deleted, another's replaced by a third's: written back.
        attacker.hdel(d.names.signing_keys, kids[0])
        attacker.hset(d.names.signing_keys, kids[-1], attacker.hget(d.names.signing_keys, kids[0]) or "junk")
        wait_for(lambda: attacker.hexists(d.names.signing_keys, kids[0]), 10, "the deleted signing key written back")
        wait_for(lambda: attacker.hget(d.names.signing_keys, kids[-1]) != attacker.hget(d.names.signing_keys, kids[0]),
                 10, "the replaced signing key written back")
        attacker.delete(d.names.signing_keys)
        attacker.set(d.names.signing_keys, "junk")
        wait_for(lambda: attacker.type(d.names.signing_keys) == b"hash", 10, "the signing keys written back")
        assert issuer.token("orders", secret).status_code == 200
        attacker.delete(d.names.clients)
        attacker.set(d.names.clients, "junk")
        wait_for(lambda: attacker.type(d.names.clients) != b"string", 10, "the client records removed")
    assert issuer.token("orders", secret).status_code == 401  # unknown now, not an outage
    status, health = wait_for(lambda: issuer.health(), 5, "health")
    assert status == 503 and "client records were destroyed" in health["problem"]
    second = fleet.issuer(d.host("issuer-2"))
    wait_for(lambda: second.health(), 20, "a second replica answering")  # it started: nothing wedged
    code, _out, err = d.operator("clients", "create", "orders", "--audience", "inventory")
    assert code == 0, err
    issuer.wait_healthy(10)  # the operator acted: healthy again


def test_anchor_rotation_with_replicas_and_running_agents(
    deployment: Deployment, fleet: Fleet, attacker: Redis,
) -> None:
    """keyherald anchor rotate against two live replicas: running agents move their pin (the
    fleet view shows it), both replicas sign with the new key, an agent deployed with the old
    anchor still starts, and a replica restarted with its (rotated) key file goes on."""
    d = deployment
    key_file = d.root / "issuer-1-control-key"
    old = d.init()
    one = fleet.issuer(d.host("issuer-1", KEYHERALD_CONTROL_KEY_FILE=str(key_file)))
    two = fleet.issuer(d.host("issuer-2"))
    one.wait_healthy()
    two.wait_healthy()
    secret = d.client("orders")
    cached = fleet.agent(d.agent_env("agent-1", KEYHERALD_CACHE_PATH=str(d.root / "agent.cache")))
    token = token_of(one.token("orders", secret))
    before_file = key_file.read_text()
    old_blob = attacker.get(d.names.control_key)

    code, out, err = d.operator("anchor", "rotate")
    assert code == 0, err
    new = out.split("KEYHERALD_TRUST_ANCHOR=", 1)[1].split()[0]
    assert new != old and "running agents follow it" in err
    wait_for(lambda: cached.status()["anchor"] == new, 10, "the running agent's pin moved")
    wait_for(lambda: {a["anchor"] for a in json.loads(d.operator("fleet", "--json")[1])["live"]} == {new}, 15,
             "the fleet view showing the new anchor")
    # Both replicas append with the new key: the agent stays fresh on their heartbeats, and a
    # revocation made through the other replica's API lands.
    assert d.operator("revoke", "token", "--token", "-", stdin=token)[0] == 0
    wait_for(lambda: cached.refuses(token) == "revoked", 5, "a revocation after the rotation")
    assert not cached.status()["stale"] and cached.status()["refused_events"] == 0
    assert d.operator("anchor")[1].startswith(f"KEYHERALD_TRUST_ANCHOR={new}")
    wait_for(lambda: key_file.read_text() != before_file, 10, "the replica's control key file following")
    # Deployed with the old anchor: starts through the chain, and refuses what was revoked.
    late = fleet.agent(d.agent_env("agent-2"))
    assert late.started and late.status()["anchor"] == new and late.refuses(token) == "revoked"
    # The agent restarted from its cache file (its pin is still the old one in its settings).
    cached.stop()
    again = fleet.agent(d.agent_env("agent-1", KEYHERALD_CACHE_PATH=str(d.root / "agent.cache")))
    assert again.started and again.status()["anchor"] == new
    # A replica restarted with its key file (now the new key) goes on.
    # A Redis writer puts the old key back: the leader writes the current one again, and a
    # replica restarted with its key file (now the new key) goes on.
    attacker.set(d.names.control_key, old_blob)
    wait_for(lambda: attacker.get(d.names.control_key) != old_blob, 10, "the current control key written back")
    attacker.set(d.names.control_key, old_blob)
    one.stop()
    two.stop()
    restarted = fleet.issuer(d.host("issuer-1", KEYHERALD_CONTROL_KEY_FILE=str(key_file)))
    restarted.wait_healthy()
    assert token_of(restarted.token("orders", secret))
    assert attacker.get(d.names.control_key) != old_blob


def test_a_rotation_whose_key_slot_a_redis_writer_empties_still_lands(
    deployment: Deployment, fleet: Fleet, attacker: Redis,
) -> None:
    """A Redis writer deleting control-key:next while `anchor rotate` runs: the rotating
    command signs from the key it made (never read back from Redis), writes it to its slot,
    and the replica and agents go on with the new anchor instead of a log nobody can sign."""
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    secret = d.client("orders")
    agent = fleet.agent(d.agent_env("agent-1"))
    stop = threading.Event()

    def empty_the_slot() -> None:
        while not stop.is_set():
            attacker.delete(d.names.control_key_next)

    thread = threading.Thread(target=empty_the_slot, daemon=True)
    thread.start()
    try:
        code, out, err = d.operator("anchor", "rotate")
    finally:
        stop.set()
        thread.join()
    assert code == 0, err
    new = out.split("KEYHERALD_TRUST_ANCHOR=", 1)[1].split()[0]
    wait_for(lambda: agent.status()["anchor"] == new, 10, "the agent's pin moved")
    token = token_of(issuer.token("orders", secret))
    assert agent.refuses(token) is None
    assert d.operator("revoke", "token", "--token", "-", stdin=token)[0] == 0
    wait_for(lambda: agent.refuses(token) == "revoked", 5, "a revocation after the rotation")
    assert issuer.health()[0] == 200 and not agent.status()["stale"]
