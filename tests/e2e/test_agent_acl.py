"""The Redis user agents need: it reads the log and writes its presence, and nothing else."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from redis.exceptions import NoPermissionError, ResponseError

from keyherald.shared.connect import sync_client
from keyherald.shared.presence import agent_acl_rules
from tests.procs import Fleet, wait_for
from tests.servers import EmbeddedValkey

from .deployment import Deployment, token_of

pytestmark = pytest.mark.redis



def test_an_agent_runs_as_a_user_that_cannot_write_the_log(
    own_server: EmbeddedValkey, namespace: str, kek: str, tmp_path: Path, fleet: Fleet
) -> None:
    d = Deployment(own_server.url, namespace, kek, tmp_path)
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    orders = d.client("orders")
    password = secrets.token_urlsafe(16)
    admin = sync_client(own_server.url)
    admin.execute_command("ACL", "SETUSER", "agents", "on", f">{password}", *agent_acl_rules(namespace))
    as_agent = f"redis://agents:{password}@127.0.0.1:{own_server.port}/0"

    agent = fleet.agent(d.agent_env("host", KEYHERALD_REDIS_URL=as_agent, KEYHERALD_AGENT_ID="restricted",
                                    KEYHERALD_PRESENCE_INTERVAL="1s"))
    assert agent.started, agent.ready
    token = token_of(issuer.token("orders", orders))
    assert agent.refuses(token) is None
    code, out, err = d.operator("revoke", "subject", "orders", "--wait", "--timeout", "5s")
    assert code == 0 and "applied by 1 of 1" in out, err  # its presence counted: it may write that
    assert agent.refuses(token) == "revoked"
    assert agent.status()["follow_failures"] == 0

    with sync_client(as_agent) as redis:
        for attempt in (
            lambda: redis.xadd(d.names.events, {"event": "forged"}, id="99999-0"),
            lambda: redis.set(d.names.snapshot, "junk"),
            lambda: redis.set(d.names.head, "junk"),
            lambda: redis.delete(d.names.events),
            lambda: redis.hset(d.names.clients, "evil", "{}"),
            lambda: redis.get(d.names.control_key),
            lambda: redis.get(d.names.head),
            lambda: redis.keys("*"),
            lambda: redis.set("{other}:presence:x", "1"),
        ):
            with pytest.raises((NoPermissionError, ResponseError), match=r"(?i)permission"):
                attempt()
    wait_for(lambda: agent.refuses(token) == "revoked" and not agent.status()["stale"], 5, "still following")
    admin.close()
