"""The inventory service: every route but /healthz needs a keyherald token for its audience.

    KEYHERALD_AUDIENCE=inventory uvicorn --factory examples.inventory:create_app --port 8002

The agent reads its settings from KEYHERALD_* (AUDIENCE, REDIS_URL, NAMESPACE, ISSUER,
TRUST_ANCHOR); without KEYHERALD_AUDIENCE the audience is "inventory". Tokens are checked
offline, in memory, in microseconds.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from keyherald.verifier import VerifierAgent, VerifierSettings
from keyherald.verifier.integrations.fastapi import require_token

__all__ = ["create_app", "settings_from_env"]

STOCK = {"widget": 42, "gadget": 7, "gizmo": 0}


def settings_from_env() -> VerifierSettings:
    """KEYHERALD_* as set; the audience is KEYHERALD_AUDIENCE, or "inventory" when unset."""
    if os.environ.get("KEYHERALD_AUDIENCE"):
        return VerifierSettings()
    return VerifierSettings(audience="inventory")


def create_app(agent: VerifierAgent | None = None) -> FastAPI:
    """The app; pass a started ``agent`` (tests), or let the app run one from KEYHERALD_*."""
    own = agent is None
    verifier = agent if agent is not None else VerifierAgent(settings_from_env())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if own:
            async with verifier:
                yield
        else:
            yield

    app = FastAPI(title="inventory (keyherald example)", lifespan=lifespan)
    app.state.agent = verifier
    # Dependencies as default values: with postponed annotations FastAPI cannot resolve an
    # Annotated alias local to this function.
    reader = Depends(require_token(verifier, scopes=["inventory:read"]))
    writer = Depends(require_token(verifier, scopes=["inventory:write"]))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        status = verifier.status()
        return {"seq": status.seq, "connected": status.connected, "stale": status.stale}

    @app.get("/items/{sku}")
    async def item(sku: str, claims: dict[str, Any] = reader) -> dict[str, Any]:
        return {"sku": sku, "available": STOCK.get(sku, 0), "caller": claims["sub"]}

    @app.post("/items/{sku}/reserve")
    async def reserve(sku: str, claims: dict[str, Any] = writer) -> dict[str, Any]:
        left = STOCK.get(sku, 0)
        if left > 0:
            STOCK[sku] = left - 1
        return {"sku": sku, "reserved": left > 0, "caller": claims["sub"]}

    return app
