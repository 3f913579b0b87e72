"""What every end-to-end test starts from: a deployment in a namespace of its own, and a
second Redis connection for tests that play someone who can write Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from keyherald.shared.connect import sync_client

from .deployment import Deployment


@pytest.fixture
def deployment(redis_url: str, namespace: str, kek: str, tmp_path: Path) -> Deployment:
    return Deployment(redis_url, namespace, kek, tmp_path)


@pytest.fixture
def attacker(redis_url: str) -> Iterator[Redis]:
    """Full read/write access to Redis, neither the KEK nor the control key."""
    with sync_client(redis_url) as client:
        yield client
