"""The orders service: calls inventory with a token it gets from the issuer.

    KEYHERALD_TOKEN_URL=http://127.0.0.1:8080/token ORDERS_CREDENTIALS=orders.json \
    INVENTORY_URL=http://127.0.0.1:8002 uvicorn --factory examples.orders:create_app --port 8001

ORDERS_CREDENTIALS is the file ``keyherald clients create orders ... --json`` printed
(or set ORDERS_CLIENT_ID and ORDERS_CLIENT_SECRET). The TokenClient caches the token,
refreshes it ahead of expiry and attaches it to every call as an httpx.Auth.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from keyherald.verifier.client import TokenClient, TokenRequestError

__all__ = ["create_app", "token_client_from_env"]


def token_client_from_env() -> TokenClient:
    path = os.environ.get("ORDERS_CREDENTIALS")
    if path:
        credentials = json.loads(Path(path).read_text())
        client_id, secret = credentials["client_id"], credentials["client_secret"]
    else:
        client_id, secret = os.environ["ORDERS_CLIENT_ID"], os.environ["ORDERS_CLIENT_SECRET"]
    url = os.environ.get("KEYHERALD_TOKEN_URL", "http://127.0.0.1:8080/token")
    return TokenClient(url, client_id, secret, audience="inventory", scope="inventory:read")


def create_app(tokens: TokenClient | None = None, inventory: httpx.AsyncClient | None = None) -> FastAPI:
    """The app; tests pass their own TokenClient and an httpx client reaching inventory."""
    state: dict[str, Any] = {"tokens": tokens, "inventory": inventory}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = state["inventory"] is None
        if state["tokens"] is None:
            state["tokens"] = token_client_from_env()
        if own:
            base = os.environ.get("INVENTORY_URL", "http://127.0.0.1:8002")
            state["inventory"] = httpx.AsyncClient(base_url=base, auth=state["tokens"], timeout=5)
        try:
            yield
        finally:
            if own:
                await state["inventory"].aclose()
                await state["tokens"].aclose()

    app = FastAPI(title="orders (keyherald example)", lifespan=lifespan)

    @app.get("/orders/check/{sku}")
    async def check(sku: str) -> Any:
        http: httpx.AsyncClient = state["inventory"]
        try:
            response = await http.get(f"/items/{quote(sku, safe='')}", auth=state["tokens"])
        except TokenRequestError as exc:
            return JSONResponse({"error": "orders cannot get a token", "reason": exc.error}, status_code=502)
        if response.status_code != 200:
            body = {"error": "inventory refused the call", "upstream_status": response.status_code}
            return JSONResponse(body, status_code=502)
        item = response.json()
        return {"sku": sku, "in_stock": item["available"] > 0, "available": item["available"]}

    return app
