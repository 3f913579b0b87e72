"""Regenerate tokens.json (only when the validation rules change on purpose):

    uv run python tests/vectors/make_tokens.py > tests/vectors/tokens.json

Token vectors for any agent, in any language: each token, the time to check it at, and the
claims it yields or the reason it is refused. The agent's state is the snapshot of
protocol.json (the EdDSA token key there, jti "4f1c" revoked, tokens live 300 s at most);
the agent's settings are in "agent". Ed25519 signatures are deterministic, so the file is
byte-stable. The token key's seed is public on purpose: never use it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from keyherald.shared.encoding import b64url_decode, b64url_encode, dumps, loads_object
from keyherald.shared.jwk import SigningKey

SIGNING_SEED = bytes(range(32, 64))  # the token key of protocol.json
MALLORY_SEED = bytes(range(64, 96))
PROTOCOL = Path(__file__).with_name("protocol.json")
AGENT = {"issuer": "https://issuer.example", "audience": "orders", "leeway": 30}
NOW = 1800000020


def _token(header: dict[str, Any], claims: dict[str, Any] | bytes, key: SigningKey | None) -> str:
    body = claims if isinstance(claims, bytes) else dumps(claims)
    signing_input = f"{b64url_encode(dumps(header))}.{b64url_encode(body)}"
    signature = key.sign(signing_input.encode()) if key else b""
    return f"{signing_input}.{b64url_encode(signature)}"


def main() -> None:
    key = SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(SIGNING_SEED))
    mallory = SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(MALLORY_SEED))
    snapshot = json.loads(PROTOCOL.read_text())["snapshot"]["snapshot"]
    assert [k["kid"] for k in snapshot["keys"]] == [key.kid]
    head = {"alg": "EdDSA", "kid": key.kid, "typ": "at+jwt"}
    good = {"iss": AGENT["issuer"], "aud": "orders", "sub": "billing", "iat": NOW - 10,
            "exp": NOW + 290, "jti": "a1", "scope": "orders:read"}
    vectors: list[tuple[str, str, int, str | None]] = []

    def add(name: str, token: str, reason: str | None, now: int = NOW) -> None:
        assert token.count(".") == 2, name  # each attack is a well-shaped compact JWS
        vectors.append((name, token, now, reason))

    add("valid", _token(head, good, key), None)
    add("valid, application/at+jwt and an audience list",
        _token({**head, "typ": "application/at+jwt"}, {**good, "aud": ["x", "orders"]}, key), None)
    add("expired, beyond the leeway", _token(head, good, key), "expired", NOW + 290 + 30)
    add("expired within the leeway: valid", _token(head, good, key), None, NOW + 290 + 29)
    add("nbf ahead beyond the leeway", _token(head, {**good, "nbf": NOW + 31}, key), "not_yet_valid")
    add("wrong issuer", _token(head, {**good, "iss": "https://evil.example"}, key), "wrong_issuer")
    add("wrong audience", _token(head, {**good, "aud": ["payments"]}, key), "wrong_audience")
    add("lifetime over max_token_ttl", _token(head, {**good, "exp": NOW + 291}, key), "lifetime_exceeded")
    add("revoked jti", _token(head, {**good, "jti": "4f1c"}, key), "revoked")
    add("iat before the key's activation", _token(head, {**good, "iat": 1800000000 - 31, "exp": 1800000000 + 269}, key),
        "key_not_active")
    add("missing exp", _token(head, {k: v for k, v in good.items() if k != "exp"}, key), "malformed")
    add("duplicate claim", _token(head, dumps(good)[:-1] + b',"sub":"admin"}', key), "malformed")
    add("bad signature (Mallory's key, our kid)", _token(head, good, mallory), "bad_signature")
    add("unknown kid", _token({**head, "kid": mallory.kid}, good, mallory), "unknown_key")
    add("alg none", _token({**head, "alg": "none"}, good, None), "algorithm_not_allowed")
    secret = dumps(key.public.jwk)
    hs = _token({**head, "alg": "HS256"}, good, None)[:-1]
    hs += "." + b64url_encode(hmac.new(secret, hs.encode(), hashlib.sha256).digest())
    add("HS256 keyed with the public JWK", hs, "algorithm_not_allowed")
    add("embedded jwk", _token({**head, "jwk": mallory.public.jwk}, good, mallory), "algorithm_not_allowed")
    add("crit", _token({**head, "crit": ["exp"]}, good, key), "malformed")
    add("typ JWT", _token({**head, "typ": "JWT"}, good, key), "malformed")
    valid = _token(head, good, key)
    add("padding", valid + "==", "malformed")
    sig = valid.rsplit(".", 1)[1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = sig[:-1] + alphabet[alphabet.index(sig[-1]) | 1]
    add("non-canonical trailing bits", valid[: -len(sig)] + twin, "malformed")
    add("whitespace", valid[:20] + " " + valid[20:], "malformed")

    doc = {
        "comment": "keyherald token vectors; the state is protocol.json's snapshot; seeds are public",
        "token_seed_hex": SIGNING_SEED.hex(),
        "agent": AGENT,
        "vectors": [
            {"name": name, "token": token, "now": now,
             **({"reason": reason} if reason else {"claims": loads_object(b64url_decode(token.split(".")[1]))})}
            for name, token, now, reason in vectors
        ],
    }
    print(json.dumps(doc, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
