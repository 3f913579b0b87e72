"""How many replicas a revocation waits for, and the settings that say so."""

from __future__ import annotations

import httpx
import pytest

from keyherald.issuer.durability import replicas_needed
from keyherald.issuer.errors import NotReplicated
from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.errors import SettingsError
from keyherald.shared.settings import load_settings
from tests.tokenservice import add_client, basic, eventually, http, issuer

__all__ = ["http", "issuer"]


@pytest.mark.parametrize(("setting", "connected", "had", "needed"), [
    (None, 0, False, 0),  # a lone server: nothing to wait for
    (None, 2, False, 1),  # replicas: one must hold it
    (None, 0, True, 1),  # replicas that dropped out: still one
    (0, 2, True, 0),  # the operator said none
    (2, 1, False, 2),  # the operator's number, whatever is connected
])
def test_replicas_needed(setting: int | None, connected: int, had: bool, needed: int) -> None:
    assert replicas_needed(setting, connected, had_replicas=had) == needed


@pytest.mark.parametrize("value", ["-1", "17", "many"])
def test_a_bad_min_replicas_is_refused_naming_the_variable(value: str, kek: str) -> None:
    with pytest.raises(SettingsError, match="KEYHERALD_MIN_REPLICAS"):
        load_settings(IssuerSettings, min_replicas=value, kek=kek, _env_file=None)


def test_auto_and_a_number_are_read(kek: str) -> None:
    assert IssuerSettings(min_replicas="auto", kek=kek, _env_file=None).min_replicas is None  # type: ignore[call-arg]
    assert IssuerSettings(min_replicas="2", kek=kek, _env_file=None).min_replicas == 2  # type: ignore[call-arg]


def test_not_replicated_says_plainly_what_happened() -> None:
    error = NotReplicated(seq=42, confirmed=0, needed=1, timeout=2.0)
    assert "seq 42" in str(error) and "0 of the 1 replica(s)" in str(error) and "not done" in str(error)
    assert error.retry_after == 3 and error.code == "not_replicated"


async def test_the_admin_api_answers_503_with_retry_after_when_too_few_replicas_hold_a_revocation(
    issuer: IssuerRuntime, http: httpx.AsyncClient,
) -> None:
    """A lone server asked for one replica (KEYHERALD_MIN_REPLICAS=1): every action that takes
    trust away is appended, but not reported done."""
    secret = await add_client(issuer, "ops", [issuer.settings.issuer], [issuer.settings.admin_scope])
    await eventually(lambda: _has_agent(issuer), within=5)

    async def headers() -> dict[str, str]:
        """A token of the active key (revoking a key ends the tokens it signed, this one too)."""
        async def signed_by_active() -> bool:
            return issuer.agent is not None and issuer.agent.keys.state.active_key is not None
        await eventually(signed_by_active, within=5)
        answer = await http.post("/token", data={"grant_type": "client_credentials"}, headers=basic("ops", secret))
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    durability = issuer.ctx.durability
    durability.min_replicas, durability.timeout = 1, 0.1
    calls = [("/admin/revoke/subject", {"sub": "orders"}),
             ("/admin/revoke/token", {"jti": "j-1", "expires_at": int(issuer.clock()) + 60}),
             ("/admin/keys/rotate", {"emergency": True}), ("/admin/revoke/key", None)]
    for path, body in calls:
        if body is None:
            body = {"kid": (await issuer.ctx.log.read_state()).active_key.kid}  # type: ignore[union-attr]
        answer = await http.post(path, headers=await headers(), json=body)
        assert answer.status_code == 503, (path, answer.text)
        assert int(answer.headers["Retry-After"]) >= 1 and "replicas" in answer.json()["error_description"]
    durability.min_replicas = 0
    answer = await http.post("/admin/revoke/subject", headers=await headers(), json={"sub": "orders"})
    assert answer.status_code == 200


async def _has_agent(runtime: IssuerRuntime) -> bool:
    return runtime.agent is not None
