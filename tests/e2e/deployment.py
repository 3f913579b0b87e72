"""A deployment for end-to-end tests: the settings issuer replicas, agents and the operator's
``keyherald`` command share, each process with a state directory of its own host."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from keyherald.shared.names import Names
from tests.procs import cli

__all__ = ["Deployment"]


class Deployment:
    def __init__(self, redis_url: str, namespace: str, kek: str, root: Path, **extra: str) -> None:
        self.redis_url, self.namespace, self.root = redis_url, namespace, root
        self.names = Names(namespace)
        self.issuer = "http://127.0.0.1:8080"
        self.base = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KEYHERALD_")},
            "KEYHERALD_REDIS_URL": redis_url,
            "KEYHERALD_NAMESPACE": namespace,
            "KEYHERALD_ISSUER": self.issuer,
            "KEYHERALD_KEK": kek,
            "KEYHERALD_HEARTBEAT_INTERVAL": "1s",
            "KEYHERALD_LEASE_TTL": "2s",
            "KEYHERALD_ROTATION_PERIOD": "1h",
            "KEYHERALD_TOKEN_TTL": "5m",
            **extra,
        }
        self.anchor = ""

    def host(self, name: str, **extra: str) -> dict[str, str]:
        """The environment of a process on host ``name``: its own state directory."""
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        return {**self.base, "KEYHERALD_STATE_DIR": str(directory), **extra}

    def operator(self, *args: str, host: str = "operator", stdin: str | None = None) -> tuple[int, str, str]:
        done = cli(self.host(host), *args, stdin=stdin)
        return done.returncode, done.stdout, done.stderr

    def init(self) -> str:
        code, out, err = self.operator("issuer", "init", host="issuer-1")
        assert code == 0, err
        found = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("KEYHERALD_TRUST_ANCHOR=")]
        self.anchor = found[0]
        return self.anchor

    def client(self, name: str, audience: str = "inventory") -> str:
        code, out, err = self.operator("clients", "create", name, "--audience", audience, "--json")
        assert code == 0, err
        secret: str = json.loads(out)["client_secret"]
        return secret

    def agent_env(self, name: str, **extra: str) -> dict[str, str]:
        assert self.anchor, "init() first"
        values = {"KEYHERALD_AUDIENCE": "inventory", "KEYHERALD_TRUST_ANCHOR": self.anchor,
                  "KEYHERALD_STARTUP_TIMEOUT": "5s", **extra}
        return self.host(name, **values)


def token_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return str(body["access_token"])
