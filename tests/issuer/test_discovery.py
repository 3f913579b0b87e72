"""Discovery as third-party clients consume it: the RFC 8414 document through Authlib's own
validator, and the JWKS revalidated by ETag (If-None-Match, 304) and HEAD on a real server."""

from __future__ import annotations

import httpx
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from keyherald.issuer.runtime import IssuerRuntime
from keyherald.issuer.settings import IssuerSettings
from keyherald.shared.clock import ManualClock
from tests.tokenservice import http, issuer, running_issuer

__all__ = ["http", "issuer"]

pytestmark = pytest.mark.redis


async def test_the_metadata_passes_authlibs_validator(http: httpx.AsyncClient) -> None:
    document = (await http.get("/.well-known/oauth-authorization-server")).json()
    AuthorizationServerMetadata(document).validate()  # raises on any breach of RFC 8414
    # §3.2: no claim with zero elements; response_types_supported is REQUIRED, so it names one.
    assert all(value != [] for value in document.values())
    assert document["response_types_supported"] == ["none"] and "authorization_endpoint" not in document
    assert document["scopes_supported"] == ["keyherald:admin"]


async def test_the_jwks_has_a_strong_etag_and_answers_if_none_match_with_304(
        issuer: IssuerRuntime, http: httpx.AsyncClient) -> None:
    first = await http.get("/.well-known/jwks.json")
    tag = first.headers["etag"]
    assert first.status_code == 200 and tag.startswith('"') and not tag.startswith("W/")
    assert (await http.get("/.well-known/jwks.json")).headers["etag"] == tag  # same keys, same tag
    for header in (tag, f'"other", {tag}', f"W/{tag}", "*"):
        cached = await http.get("/.well-known/jwks.json", headers={"If-None-Match": header})
        assert cached.status_code == 304 and cached.content == b"", header
        assert cached.headers["etag"] == tag and "max-age=" in cached.headers["cache-control"]
    stale = await http.get("/.well-known/jwks.json", headers={"If-None-Match": '"not-it"'})
    assert stale.status_code == 200 and stale.json() == first.json()
    await issuer.admin.rotate()  # new standby: new content, new tag
    changed = await http.get("/.well-known/jwks.json", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert len(changed.json()["keys"]) == len(first.json()["keys"]) + 1


async def test_head_on_the_jwks_gives_its_headers_without_a_body(issuer_settings: IssuerSettings,
                                                                 clock: ManualClock) -> None:
    settings = issuer_settings.model_copy(update={"http_port": 0})
    async with running_issuer(settings, clock, serve_http=True) as runtime, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as client:
        get = await client.get("/.well-known/jwks.json")
        head = await client.head("/.well-known/jwks.json")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["etag"] == get.headers["etag"]
        assert head.headers["content-length"] == str(len(get.content))
        assert head.headers["content-type"] == "application/jwk-set+json"
        not_modified = await client.head("/.well-known/jwks.json", headers={"If-None-Match": get.headers["etag"]})
        assert not_modified.status_code == 304
