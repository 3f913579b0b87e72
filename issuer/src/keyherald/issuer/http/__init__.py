"""The issuer's HTTP API (placeholder until the token endpoint lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from ..runtime import IssuerRuntime

__all__ = ["create_app"]


def create_app(runtime: IssuerRuntime) -> FastAPI:
    app = FastAPI(title="keyherald issuer")

    @app.get("/healthz")
    async def healthz() -> Any:
        body = {"role": runtime.role, "redis": runtime.redis_ok, "seq": runtime.seq}
        return JSONResponse(body, status_code=200 if runtime.redis_ok else 503)

    return app
