"""Seeing the fleet: agents in processes of their own, an issuer, the operator's command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.procs import Fleet, wait_for

from .deployment import Deployment, token_of

pytestmark = pytest.mark.redis

INTERVAL = 0.5  # presence: live within 1.5 s, expired after 3 s


@pytest.fixture
def deployment(redis_url: str, namespace: str, kek: str, tmp_path: Path) -> Deployment:
    return Deployment(redis_url, namespace, kek, tmp_path)


def _fleet(d: Deployment) -> dict[str, object]:
    code, out, err = d.operator("fleet", "--json")
    assert code in (0, 1), err
    view: dict[str, object] = json.loads(out)
    return view


def _ids(agents: object) -> list[str]:
    assert isinstance(agents, list)
    return [str(a["agent_id"]) for a in agents]


def test_the_fleet_is_seen_and_a_revocation_is_confirmed_by_every_agent(deployment: Deployment, fleet: Fleet) -> None:
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    orders = d.client("orders")
    # agent-2 is killed below: a longer interval keeps it "lost" (3 to 6 s) long enough for
    # the command to show it on a busy machine.
    agents = [fleet.agent(d.agent_env(f"host-{i}", KEYHERALD_AGENT_ID=f"agent-{i}",
                                      KEYHERALD_PRESENCE_INTERVAL=f"{INTERVAL if i < 2 else 1.0}s")) for i in range(3)]
    assert all(a.started for a in agents)
    view = wait_for(lambda: (v := _fleet(d)) and len(v["live"]) == 3 and v, 10, "three live agents")  # type: ignore[arg-type]
    assert _ids(view["live"]) == ["agent-0", "agent-1", "agent-2"]
    # Each agent's seq against the head the view was read with: heartbeats come every second
    # here and an agent rewrites its record at most once a second, so it may trail by one.
    view = wait_for(lambda: (v := _fleet(d)) and all(a["lag_events"] <= 1 for a in v["live"]) and v, 5,  # type: ignore[index]
                    "every agent at the head")
    head = view["head"]
    assert isinstance(head, dict) and isinstance(view["live"], list)
    assert all(a["log"] == head["log"] and head["seq"] - 1 <= a["seq"] <= head["seq"] for a in view["live"])
    code, out, _ = d.operator("fleet")
    assert code == 0 and "3 live agent(s)" in out and "agent-2" in out

    token = token_of(issuer.token("orders", orders))
    code, out, err = d.operator("revoke", "subject", "orders", "--wait")
    assert code == 0, err
    assert "applied by 3 of 3 live agents in" in out
    assert all(a.refuses(token) == "revoked" for a in agents)

    # One agent frozen: --wait names it and fails; thawed, it confirms and catches up.
    frozen = agents[1]
    frozen.pause()
    try:
        code, out, err = d.operator("revoke", "subject", "billing", "--force", "--wait", "--timeout", "2s")
        assert code == 1 and "agent-1" in err and "2 of 3 live agents" in err
        assert "agent-0" not in err
    finally:
        frozen.resume()
    seq = int(out.strip().splitlines()[0].rsplit(" ", 1)[1])
    wait_for(lambda: all(a["seq"] >= seq for a in _fleet(d)["live"]), 5, "the frozen agent caught up")  # type: ignore[index]
    code, out, err = d.operator("revoke", "subject", "payments", "--force", "--wait", "--json")
    assert code == 0 and json.loads(out)["confirmed"] == 3

    # A killed agent turns lost, then its record expires.
    killed = agents[2]
    killed.proc.kill()
    killed.proc.wait()
    view = wait_for(lambda: (v := _fleet(d)) and _ids(v["lost"]) == ["agent-2"] and v, 10, "the killed agent lost")
    assert _ids(view["live"]) == ["agent-0", "agent-1"]
    code, out, _ = d.operator("fleet")
    assert "lost" in out and "agent-2" in out
    wait_for(lambda: not _fleet(d)["lost"], 10, "the lost agent's record expired")
    # A clean stop leaves at once.
    agents[0].stop()
    assert _ids(_fleet(d)["live"]) == ["agent-1"]


def test_fleet_exits_1_when_an_agent_is_stale_or_behind(deployment: Deployment, fleet: Fleet) -> None:
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    agent = fleet.agent(d.agent_env("host", KEYHERALD_AGENT_ID="slow", KEYHERALD_PRESENCE_INTERVAL="5s"))
    assert agent.started
    wait_for(lambda: d.operator("fleet")[0] == 0, 10, "a healthy fleet")
    issuer.stop()  # no more heartbeats: within the freshness bound the agent reports stale
    _code, out, _ = wait_for(lambda: (r := d.operator("fleet")) and r[0] == 1 and r, 15, "a stale agent")
    assert "STALE" in out



def test_an_agent_with_presence_off_is_not_listed_but_counted_where_redis_tells(
    deployment: Deployment, fleet: Fleet
) -> None:
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1"))
    issuer.wait_healthy()
    seen = fleet.agent(d.agent_env("a", KEYHERALD_AGENT_ID="seen", KEYHERALD_PRESENCE_INTERVAL=f"{INTERVAL}s"))
    hidden = fleet.agent(d.agent_env("b", KEYHERALD_PRESENCE="off"))
    assert seen.started and hidden.started
    view = wait_for(lambda: (v := _fleet(d)) and v["live"] and v, 5, "the visible agent")
    assert _ids(view["live"]) == ["seen"] and view["unseen"] == 1
    code, out, err = d.operator("revoke", "subject", "orders", "--force", "--wait")
    assert code == 0 and "applied by 1 of 1" in out, err  # --wait cannot count what it cannot see
    code, out, _ = d.operator("fleet")
    assert "1 connected without presence" in out
