"""oauth4webapi (Node) against a real issuer: RFC 8414 discovery, then the client credentials
grant, with the library's own checks. Needs node and npm: the test installs the locked
oauth4webapi into tests/interop/node_modules (git-ignored) from the npm registry when it is
missing, so a plain ``uv run pytest`` works on a fresh clone."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from tests.tokenservice import add_client, running_issuer

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs node and npm on PATH (CI installs both)")
    if not (HERE / "node_modules" / "oauth4webapi").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE, check=True, timeout=300)
    return node


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_oauth4webapi_discovers_the_issuer_and_gets_a_token(issuer_settings: IssuerSettings,
                                                                 clock: ManualClock, node: str) -> None:
    port = _free_port()
    issuer = f"http://127.0.0.1:{port}"  # discovery is at the issuer id's own URL
    settings = issuer_settings.model_copy(update={"issuer": issuer, "http_port": port})
    async with running_issuer(settings, clock, serve_http=True) as runtime:
        secret = await add_client(runtime, "orders", ["inventory"], ["inventory:read"])
        proc = await asyncio.create_subprocess_exec(
            node, str(HERE / "oauth4webapi.mjs"), issuer, "orders", "inventory", cwd=HERE,
            env={**os.environ, "CLIENT_SECRET": secret},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["metadata"]["issuer"] == issuer
    assert result["metadata"]["token_endpoint"] == f"{issuer}/token"
    assert result["token"]["token_type"] == "bearer" and result["token"]["access_token"].count(".") == 2
    assert result["token"]["scope"] == "inventory:read"
