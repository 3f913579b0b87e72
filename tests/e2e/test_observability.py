"""Metrics and logs a platform team scrapes and ships: on a real issuer and a real agent."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keyherald.shared.connect import sync_client
from tests.procs import Fleet, wait_for

from .deployment import Deployment, token_of

pytestmark = pytest.mark.redis


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_issuer_and_an_agent_export_what_happened(deployment: Deployment, fleet: Fleet) -> None:
    d = deployment
    d.init()
    issuer = fleet.issuer(d.host("issuer-1", KEYHERALD_LOG_FORMAT="json"))
    issuer.wait_healthy()
    orders = d.client("orders")
    agent = fleet.agent(d.agent_env("host", KEYHERALD_AGENT_ID="agent-0", KEYHERALD_PRESENCE_INTERVAL="1s",
                                    KEYHERALD_LOG_FORMAT="json"))
    assert agent.started
    first, second = (token_of(issuer.token("orders", orders)) for _ in range(2))
    assert issuer.token("orders", "khs_wrong").status_code == 401
    assert issuer.token("nobody", "khs_wrong").status_code == 401
    # RFC 7009: the replica itself appends the revocation.
    revoked = httpx.post(f"{issuer.url}/revoke", data={"token": first}, auth=("orders", orders), timeout=5)
    assert revoked.status_code == 200
    wait_for(lambda: agent.refuses(first) == "revoked", 5, "the revocation applied")
    assert agent.refuses(second) is None and agent.refuses("junk") == "malformed"
    with sync_client(d.redis_url) as redis:  # junk in the stream: refused, counted, logged
        redis.xadd(d.names.events, {"event": "junk"}, id="999999999-0")
    wait_for(lambda: agent.status()["refused_by_reason"].get("malformed") == 1, 5, "the junk refused")

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = httpx.get(f"{issuer.url}/metrics", timeout=5)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        return samples(response.text)

    found = wait_for(lambda: (m := scrape()) and m.get(("keyherald_fleet_agents", (("state", "live"),))) == 1 and m,
                     10, "the fleet seen by the replica")
    assert found[("keyherald_tokens_issued_total", (("client", "orders"),))] == 2
    assert found[("keyherald_token_requests_refused_total", (("client", ""), ("error", "invalid_client")))] == 2
    assert found[("keyherald_client_auth_failures_total", (("reason", "wrong_secret"),))] == 1
    assert found[("keyherald_client_auth_failures_total", (("reason", "unknown_client"),))] == 1
    assert found[("keyherald_log_appends_total", (("type", "token.revoked"),))] == 1
    assert found[("keyherald_token_request_duration_seconds_count", ())] == 4
    assert found[("keyherald_leader", ())] == 1 and found[("keyherald_healthy", ())] == 1
    assert found[("keyherald_log_head_seq", ())] >= 8
    assert 0 <= found[("keyherald_signing_key_age_seconds", ())] < 60
    assert 3590 < found[("keyherald_next_rotation_seconds", ())] <= 3600  # rotation period 1h
    assert found[("keyherald_fleet_max_lag_events", ())] <= 2

    agent_found = samples(agent.metrics())
    status = agent.status()
    assert agent_found[("keyherald_agent_verifications_total", (("outcome", "accepted"), ("reason", "")))] == 1
    assert agent_found[("keyherald_agent_verifications_total", (("outcome", "refused"), ("reason", "revoked")))] == 1
    assert agent_found[("keyherald_agent_verifications_total", (("outcome", "refused"), ("reason", "malformed")))] == 1
    assert agent_found[("keyherald_agent_seq", ())] == status["seq"]
    assert agent_found[("keyherald_agent_stale", ())] == 0 and agent_found[("keyherald_agent_connected", ())] == 1
    assert agent_found[("keyherald_agent_propagation_seconds_count", ())] >= 1  # the revocation, at least
    assert agent_found[("keyherald_agent_staleness_seconds", ())] < 5
    assert agent_found[("keyherald_agent_refused_events_total", (("reason", "malformed"),))] == 1

    # Logs: one JSON object per line, from both processes; none holds a token or a secret.
    agent.stop()
    issuer.stop()
    for text in (agent.stderr(), issuer.stderr()):
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines, "no log lines"
        for line in lines:
            doc = json.loads(line)
            assert {"time", "level", "logger", "message"} <= doc.keys()
            assert first not in line and orders not in line and "\x1b[" not in line
