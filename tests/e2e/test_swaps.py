"""An attacker who swaps the log under a running ``keyherald`` command (the review's F1 and
F2): an operator is never told a change landed while it is lost, and a change is never
undone by a log put back from before it.

The attacker records the log's three keys (DUMP), lets the live log move on, then uses
MONITOR to act the instant the command starts: the command appends to the recorded,
genuine, older log while readers follow the live one.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from redis import Redis

from tests.procs import Fleet, wait_for

from .deployment import Deployment, token_of
from .monitor import Command, Monitor

pytestmark = pytest.mark.redis


class Recording:
    """The log's keys at one moment, put back atomically later (the live ones moved aside)."""

    def __init__(self, redis: Redis, d: Deployment) -> None:
        self.redis, self.keys = redis, [d.names.events, d.names.head, d.names.snapshot]
        self.aside = [f"{{{d.namespace}}}:aside:{i}" for i in range(3)]
        pipe = redis.pipeline(transaction=True)
        for key in self.keys:
            pipe.dump(key)
        self.dumps = pipe.execute()
        self.head = redis.get(d.names.head)

    def swap_in(self) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for key, aside, dumped in zip(self.keys, self.aside, self.dumps, strict=True):
            pipe.rename(key, aside)
            pipe.restore(key, 0, dumped)
        pipe.execute()

    def swap_back(self) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for key, aside in zip(self.keys, self.aside, strict=True):
            pipe.delete(key)
            pipe.rename(aside, key)
        pipe.execute()

    def put_back(self) -> None:
        """Overwrite the live log with the recording: a plain rollback."""
        pipe = self.redis.pipeline(transaction=True)
        for key, dumped in zip(self.keys, self.dumps, strict=True):
            pipe.restore(key, 0, dumped, replace=True)
        pipe.execute()


def _seq(head: bytes | None) -> int:
    return int(head.split(b":")[1]) if head else 0


def _said_not_done(code: int, err: str) -> bool:
    """The command failed and said so: appended but not confirmed, or refused before it
    appended anything (MONITOR is asynchronous: the swap can land inside the command's first
    read, and the log then looks rolled back against the record that read just wrote)."""
    return code == 1 and ("not confirmed" in err or "nothing was appended" in err) and "Traceback" not in err


def _recorded_then_passed(attacker: Redis, d: Deployment) -> Recording:
    recording = Recording(attacker, d)
    wait_for(lambda: _seq(attacker.get(d.names.head)) > _seq(recording.head) + 1, 10, "the live log moving on")
    return recording


def test_a_revocation_appended_to_a_swapped_in_log_is_never_acknowledged_and_lost(
    deployment: Deployment, fleet: Fleet, attacker: Redis
) -> None:
    """F1: the revocation lands in an old log no reader follows, then the live log is swapped
    back. The command must not report it done unless it is enforced: it retries on the live
    log, or it says it is not done."""
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    token = token_of(issuer.token("orders", d.client("orders")))
    agents = [fleet.agent(d.agent_env(f"agent-{i}")) for i in range(2)]
    recording = _recorded_then_passed(attacker, d)
    swapped: dict[str, object] = {}

    def on_control_key(command: Command) -> None:  # the command starts: show it the old log
        if "client" not in swapped:
            swapped["client"] = (command.get("client_address"), command.get("client_port"))
            recording.swap_in()

    def on_script(command: Command) -> None:  # its append landed there: put the live log back
        if swapped.get("client") != (command.get("client_address"), command.get("client_port")):
            return
        if "back" in swapped:
            return
        swapped["back"] = True
        deadline = time.monotonic() + 2
        while attacker.get(d.names.head) == recording.head and time.monotonic() < deadline:
            time.sleep(0.0005)
        recording.swap_back()

    with Monitor(d.redis_url, {f"{{{d.namespace}}}:control-key": on_control_key, "EVALSHA": on_script}):
        time.sleep(0.2)
        code, _out, err = d.operator("revoke", "subject", "orders", "--force")
    assert swapped.get("back"), "the attack did not run: the test proves nothing"
    if code == 0:
        fresh = fleet.agent(d.agent_env("agent-fresh"))
        for agent in [*agents, fresh]:
            wait_for(lambda a=agent: a.refuses(token) == "revoked", 10, "the acknowledged revocation enforced")
    else:
        assert _said_not_done(code, err), err


@pytest.mark.parametrize("change", ["rotate-secret", "disable"])
def test_a_client_change_is_never_undone_by_a_log_from_before_it(
    deployment: Deployment, fleet: Fleet, attacker: Redis, change: str
) -> None:
    """F2: the leaked-secret procedure's first step (rotate the secret, or disable the client)
    runs on a log put back from before it. The leaked secret must stay dead, also once the
    attacker puts the old client record back."""
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    leaked = d.client("orders")
    old_record = attacker.hget(d.names.clients, "orders")
    recording = _recorded_then_passed(attacker, d)
    fired = threading.Event()

    def on_control_key(_command: Command) -> None:
        if not fired.is_set():
            fired.set()
            recording.put_back()

    with Monitor(d.redis_url, {f"{{{d.namespace}}}:control-key": on_control_key}):
        time.sleep(0.2)
        code, out, err = d.operator("clients", change, "orders", *(["--json"] if change == "rotate-secret" else []))
    assert fired.is_set(), "the attack did not run: the test proves nothing"
    assert code == 0 or _said_not_done(code, err), err
    if "nothing was appended" in err:
        return  # refused before appending: there is no change for the attacker to undo
    if code == 0 and change == "rotate-secret":
        fresh = json.loads(out)["client_secret"]
        wait_for(lambda: issuer.token("orders", fresh).status_code == 200, 10, "the new secret working")
    time.sleep(3)  # the replica repairs whatever it saw
    assert issuer.token("orders", leaked).status_code in (400, 401)  # a wrong secret, or disabled
    attacker.hset(d.names.clients, "orders", old_record)  # enabled, with the leaked secret
    assert issuer.token("orders", leaked).status_code == 401  # a record the log does not bind
