"""What the OpenAPI document says beyond what FastAPI infers: the form bodies it does not
parse, and every error each route really answers.

FastAPI lists 422 for any route with a body or a parameter; keyherald never answers 422 (a
malformed request is a 400 in the OAuth or RFC 6750 shape), so the document drops it, and
names the answers a client must handle instead.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["FORM_BODY", "REVOKE_BODY", "ErrorBody", "errors", "prune_validation_errors"]


class ErrorBody(BaseModel):
    """Every error answer: an RFC 6749 §5.2 / RFC 6750 error code and a description that never
    echoes the request."""

    error: str
    error_description: str | None = None


_WHAT = {
    304: "Not Modified: the ETag given in If-None-Match is still current",
    400: "invalid_request (or another RFC 6749 §5.2 code): the request is malformed",
    401: "invalid_client / invalid_token: no valid credentials (WWW-Authenticate says which scheme)",
    403: "insufficient_scope: the token lacks the admin scope",
    404: "not_found: no such key or client",
    409: "conflict: a client of that name exists already",
    413: "the body is larger than 16 KiB; it was not read",
    429: "temporarily_unavailable: too many failed authentications or revocations (see Retry-After)",
    503: "temporarily_unavailable: Redis unreachable, no signing key yet, or the admin agent starting"
         " (see Retry-After)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that may answer these codes."""
    return {code: ({"description": _WHAT[code]} if code == 304 else {"description": _WHAT[code], "model": ErrorBody})
            for code in codes}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": schema}}}}


_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}

FORM_BODY = _form(
    {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": _STRING, "client_secret": _STRING, "audience": _STRINGS, "resource": _STRINGS, "scope": _STRING,
    },
    ["grant_type"],
)
REVOKE_BODY = _form(
    {"token": _STRING, "token_type_hint": _STRING, "client_id": _STRING, "client_secret": _STRING}, ["token"]
)


def prune_validation_errors(schema: dict[str, Any]) -> None:
    """Drop FastAPI's 422 answers and their schemas, which keyherald never sends."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
