"""``keyherald token``: a token by hand from a real issuer's token endpoint, the secret never on argv."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from keyherald.shared.encoding import b64url_decode, loads_object
from tests.tokenservice import add_client, running_issuer

pytestmark = pytest.mark.redis


@pytest.fixture
def clock() -> ManualClock:
    import time

    return ManualClock(float(int(time.time())))


async def keyherald(*argv: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The command in a process of its own, while this loop keeps serving the issuer."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYHERALD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from keyherald.issuer.cli import main; main()", *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    return int(proc.returncode or 0), out.decode(), err.decode()


def _claims(token: str) -> dict[str, object]:
    return loads_object(b64url_decode(token.split(".")[1]))


@pytest.fixture
async def served(issuer_settings: IssuerSettings, clock: ManualClock) -> IssuerRuntime:
    settings = issuer_settings.model_copy(update={"http_port": 0})
    async with running_issuer(settings, clock, serve_http=True) as runtime:
        yield runtime  # type: ignore[misc]


async def test_prints_the_access_token_alone(served: IssuerRuntime, tmp_path: Path) -> None:
    secret = await add_client(served, "orders", ["inventory", "payments"], ["inventory:read", "inventory:write"])
    url = f"http://127.0.0.1:{served.http_port}/token"
    code, out, err = await keyherald("token", "orders", "--secret-file", "-", "--audience", "inventory",
                                     "--scope", "inventory:read", "--token-url", url, stdin=secret + "\n")
    assert code == 0 and err == "" and out.count("\n") == 1
    claims = _claims(out.strip())
    assert claims["sub"] == "orders" and claims["aud"] == "inventory" and claims["scope"] == "inventory:read"

    # A file holding the secret, or the JSON 'clients create --json' printed; the URL from the env.
    raw, credentials = tmp_path / "secret", tmp_path / "orders.json"
    raw.write_text(secret)
    credentials.write_text(json.dumps({"client_id": "orders", "client_secret": secret}))
    for path in (raw, credentials):
        code, out, _ = await keyherald("token", "orders", "--secret-file", str(path), "--audience", "payments",
                                       env={"KEYHERALD_TOKEN_URL": url})
        assert code == 0 and _claims(out.strip())["aud"] == "payments"
    # No URL given: the issuer's own, from KEYHERALD_ISSUER.
    code, _, err = await keyherald("token", "orders", "--secret-file", str(raw), "--audience", "payments",
                                   env={"KEYHERALD_ISSUER": f"http://127.0.0.1:{served.http_port}"})
    assert code == 0, err


async def test_refusals_and_bad_usage_get_their_exit_codes(served: IssuerRuntime, tmp_path: Path) -> None:
    secret = await add_client(served, "orders", ["inventory"])
    url = f"http://127.0.0.1:{served.http_port}/token"
    code, out, err = await keyherald("token", "orders", "--secret-file", "-", "--token-url", url, stdin="khs_wrong")
    assert code == 1 and out == "" and "refused: invalid_client" in err and "khs_wrong" not in err
    code, _, err = await keyherald("token", "orders", "--secret-file", "-", "--audience", "elsewhere",
                                   "--token-url", url, stdin=secret)
    assert code == 1 and "invalid_target" in err
    code, _, err = await keyherald("token", "orders", "--secret-file", "-", "--token-url", "http://127.0.0.1:1/token",
                                   stdin=secret)
    assert code == 1 and "cannot reach the token endpoint" in err
    other = tmp_path / "billing.json"
    other.write_text(json.dumps({"client_id": "billing", "client_secret": secret}))
    for argv in (("--secret-file", str(tmp_path / "missing")), ("--secret-file", str(other)),
                 ("--secret", secret)):  # there is no way to pass the secret itself on argv
        code, _, err = await keyherald("token", "orders", *argv, "--token-url", url)
        assert code == 2 and secret not in err, argv
