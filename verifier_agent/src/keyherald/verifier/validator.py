"""The token validator: pure CPU, no I/O, called on every request.

``Validator.verify`` reads whatever state the follower last swapped into the
:class:`~keyherald.verifier.keycache.KeyCache` (no locks) and either returns the claims or
raises an :class:`~keyherald.verifier.errors.InvalidToken` subclass; nothing else escapes,
whatever the input. Checks, in order:

1. ``malformed`` for anything but a str or ASCII bytes of at most 8 KiB (before anything
   else: a huge string is not even hashed for the cache).
2. ``stale``: no bootstrapped state, or (with ``max_staleness``) no verified word from the
   issuer for longer than that. On cache hits too: fail closed.
3. The header (parsed once per distinct header, then remembered): ``malformed`` unless
   three dot-separated parts, strict base64url (no padding, whitespace or non-canonical
   trailing bits) and strict JSON (no duplicate members, no NaN), a ``kid``, ``typ``
   ``at+jwt`` (RFC 9068) and no ``crit`` (we understand no extension);
   ``algorithm_not_allowed`` for a header that supplies a key (jwk, jku, x5u, x5c: an
   attempt to choose the key, hence the algorithm), an alg outside ES256/EdDSA/RS256
   (``none``, every HMAC), or an alg other than the kid's key's own; ``unknown_key`` for a
   kid the cache does not hold (counted apart in ``unknown_kids``).
4. The other two parts' encoding (``malformed``), ``key_revoked``, then ``bad_signature``.
5. Claims, only once the signature holds: payload strict JSON, ``exp`` and ``iat`` required
   NumericDates (``nbf`` optional), ``jti``/``sub`` strings if present, else ``malformed``;
   ``iss`` (missing or other: ``wrong_issuer``); ``aud`` str or list of str containing one of
   ours (missing or none of ours: ``wrong_audience``); ``expired`` and ``not_yet_valid`` with
   the leeway; ``lifetime_exceeded`` when exp - iat exceeds the issuer's published maximum
   (or none is known); ``key_not_active`` when iat falls outside the key's signing window;
   ``revoked`` by jti, or by subject when iat <= the subject's cut-off.

The signing window of a key is [activated_at, retired_at or revoked_at], widened by the
leeway: a key that leaked after retirement cannot mint fresh-looking tokens. A key still
``published`` here opens its window at ``published_at``: its activation event may be in
flight (an emergency rotation activates the standby at once and promises that tokens it
signs verify everywhere a moment later).

Verified tokens go to a bounded LRU keyed by the token text. A hit re-checks staleness,
expiry, the token's and its subject's revocation and its key's state against the CURRENT
state, so a revocation applies to cached tokens at once; a lower maximum lifetime empties
the cache. Callers get a copy of the claims.
"""

from __future__ import annotations

import binascii
import math
from collections import OrderedDict
from collections.abc import Collection, Mapping
from typing import Any

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.encoding import B64_CANONICAL_LAST, B64_PAD, B64_TO_STD, scan_json
from keyherald.shared.events import REVOCATION_GRACE, KeyState
from keyherald.shared.jwa import SignatureCheck

from ._claims import MAX_TIME, check_audience, numeric_date, thaw
from ._compact import json_object, parse_header
from .errors import (
    AlgorithmNotAllowed,
    InvalidSignature,
    InvalidToken,
    KeyNotActive,
    KeyRevoked,
    LifetimeExceeded,
    MalformedToken,
    StaleState,
    TokenExpired,
    TokenNotYetValid,
    TokenRevoked,
    UnknownKey,
    WrongIssuer,
)
from .keycache import KeyCache

__all__ = ["MAX_TOKEN_LENGTH", "REASONS", "Validator"]

MAX_TOKEN_LENGTH = 8192
REASONS = (
    "malformed", "algorithm_not_allowed", "unknown_key", "bad_signature", "expired",
    "not_yet_valid", "wrong_issuer", "wrong_audience", "lifetime_exceeded", "revoked",
    "key_revoked", "key_not_active", "stale",
)
_REVOKED = KeyState.REVOKED
_INF = math.inf
_MAX_CACHED_HEADERS = 256
_a2b = binascii.a2b_base64


_Entry = list[Any]
"""[claims, exp, iat, kid, jti, sub, nested, generation]: the last is the revoked-token store's
generation when the jti was last found not revoked (a hit looks it up again only if it moved)."""
"""A cached token: (claims, exp, iat, kid, jti, sub, names of claims holding lists or objects).
A plain tuple: built and unpacked faster than a NamedTuple, and this is the hot path."""


def _as_text(token: Any) -> str:
    if isinstance(token, str):
        return str.__str__(token)
    if isinstance(token, bytes | bytearray | memoryview):
        if len(token) > MAX_TOKEN_LENGTH:
            raise MalformedToken("token is too long")
        try:
            return bytes(token).decode("ascii")
        except UnicodeDecodeError:
            raise MalformedToken("token is not ASCII") from None
    raise MalformedToken("token is not a string")


class Validator:
    """Validates keyherald access tokens against the agent's key cache; see the module doc."""

    def __init__(
        self,
        keys: KeyCache,
        *,
        issuer: str,
        audience: str | Collection[str],
        leeway: float = 30.0,
        max_staleness: float | None = None,
        cache_size: int = 10_000,
        clock: Clock = system_clock,
    ) -> None:
        audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not issuer or not isinstance(issuer, str):
            raise ValueError("issuer must be a non-empty string")
        if not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise ValueError("audience must be a non-empty string or collection of strings")
        if not 0 <= leeway <= REVOCATION_GRACE:
            # Revocations are dropped REVOCATION_GRACE after the tokens they cover expire.
            raise ValueError(f"leeway must be between 0 and {REVOCATION_GRACE} seconds")
        if max_staleness is not None and not max_staleness > 0:
            raise ValueError("max_staleness must be positive (or None: never stale)")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._keys = keys
        self._issuer = issuer
        self._audiences = audiences
        self._leeway = float(leeway)
        if max_staleness is not None:
            keys.configure(float(max_staleness), float(leeway))
        # A lower maximum lifetime may refuse tokens the cache holds: it is emptied then (a
        # policy change is rare; a check of every hit would cost every hit).
        keys.on_lower_ttl.append(self.clear_cache)
        self._cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._headers: dict[bytes, tuple[str, SignatureCheck]] = {}
        self._hits = self._misses = self._unknown_kids = self._unexpected = self._accepted = 0
        self._refused = dict.fromkeys(REASONS, 0)

    @property
    def counters(self) -> Mapping[str, int]:
        """A copy: ``accepted``, ``cache_hits``, ``cache_misses``, ``unknown_kids``, ``unexpected_errors``
        (always 0 unless a bug) and ``refused.<reason>`` for every reason in REASONS.
        Updated without locks: under threads a count may now and then miss one."""
        counts = {
            "accepted": self._accepted + self._hits,
            "cache_hits": self._hits,
            "cache_misses": self._misses,
            "unknown_kids": self._unknown_kids,
            "unexpected_errors": self._unexpected,
        }
        counts.update((f"refused.{reason}", n) for reason, n in self._refused.items())
        return counts

    def clear_cache(self) -> None:
        self._cache.clear()

    def verify(self, token: str | bytes) -> dict[str, Any]:
        """The token's claims (a fresh dict), or an InvalidToken subclass saying why not."""
        try:
            if type(token) is not str:
                token = _as_text(token)
            if len(token) > MAX_TOKEN_LENGTH:  # before hashing it for the cache
                raise MalformedToken("token is too long")
            cache = self._cache
            entry = cache.get(token)
            if entry is None:
                return self._verify_uncached(token)
            # Cache hit: the token's own checks hold; re-check what time and events change.
            claims, exp, iat, kid, jti, sub, nested, seen = entry
            keys = self._keys
            state = keys.state
            now = self._clock()
            if now - state.time > keys.stale_after:
                raise StaleState("no fresh word from the issuer")
            if exp <= now - self._leeway:
                self._evict(token)
                raise TokenExpired("token has expired")
            if jti is not None and seen != state.revoked_tokens.generation:  # revoked since: look
                revoked = state.revoked_tokens
                generation = revoked.generation
                if jti in revoked:
                    self._evict(token)
                    raise TokenRevoked("token is revoked")
                entry[7] = generation
            if sub is not None:
                cut = state.revoked_subjects.get(sub)
                if cut is not None and iat <= cut.revoked_at:
                    self._evict(token)
                    raise TokenRevoked("token's subject is revoked")
            record = state.keys.get(kid)
            if record is None or record.state is _REVOKED:
                self._evict(token)
                raise (UnknownKey("signing key is gone") if record is None else KeyRevoked("signing key is revoked"))
            try:
                cache.move_to_end(token)
            except KeyError:  # evicted by another thread meanwhile: still valid
                pass
            self._hits += 1
            result: dict[str, Any] = claims.copy()
            for name in nested:
                result[name] = thaw(result[name])
            return result
        except InvalidToken as exc:
            self._refused[exc.reason] = self._refused.get(exc.reason, 0) + 1
            raise
        except Exception:
            # Safety net: a bug must still refuse, never leak a traceback. Tests assert 0.
            self._unexpected += 1
            self._refused["malformed"] += 1
            raise MalformedToken("token could not be checked") from None

    def _evict(self, token: str) -> None:
        self._cache.pop(token, None)

    def _verify_uncached(self, token: str) -> dict[str, Any]:
        self._misses += 1
        keys = self._keys
        state = keys.state
        now = self._clock()
        if now - state.time > keys.stale_after:
            raise StaleState("no fresh word from the issuer")
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise MalformedToken("token is not ASCII") from None
        parts = raw.split(b".")
        if len(parts) != 3:
            raise MalformedToken("token is not three dot-separated parts")
        head, body, sig = parts
        known = self._headers.get(head)
        kid, check = known if known is not None else self._header(head)
        record = state.keys.get(kid)
        if record is None:
            self._unknown_kids += 1
            raise UnknownKey("token signed by an unknown key")
        # shared.encoding.b64url_decode, inlined for both parts: this is the hot path.
        body_tail, sig_tail = len(body) & 3, len(sig) & 3
        if (body_tail and body[-1] not in B64_CANONICAL_LAST[body_tail]) or (
            sig_tail and sig[-1] not in B64_CANONICAL_LAST[sig_tail]
        ):
            raise MalformedToken("token part is not canonical base64url")
        try:
            payload = _a2b(body.translate(B64_TO_STD) + B64_PAD[body_tail], strict_mode=True)
            signature = _a2b(sig.translate(B64_TO_STD) + B64_PAD[sig_tail], strict_mode=True)
        except binascii.Error:
            raise MalformedToken("token part is not canonical base64url") from None
        if record.state is _REVOKED:
            raise KeyRevoked("signing key is revoked")
        if not check(raw[: len(head) + 1 + len(body)], signature):
            raise InvalidSignature("token signature does not verify")

        claims: dict[str, Any]
        try:
            text = payload.decode("utf-8")
            claims, stop = scan_json(text, 0)
            if stop != len(text) or type(claims) is not dict:
                claims, text = json_object(payload)  # surrounding whitespace, or an error
        except (ValueError, RecursionError, StopIteration):
            try:
                claims, text = json_object(payload)
            except ValueError:
                raise MalformedToken("token payload is not a JSON object") from None
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        jti, sub = claims.get("jti"), claims.get("sub")
        if not (
            (type(exp) is int or type(exp) is float) and 0 <= exp < MAX_TIME
            and (type(iat) is int or type(iat) is float) and 0 <= iat < MAX_TIME
            and (nbf is None or numeric_date(nbf))
        ):
            raise MalformedToken("token exp, iat or nbf missing or not a NumericDate")
        if (jti is not None and type(jti) is not str) or (sub is not None and type(sub) is not str):
            raise MalformedToken("token jti or sub is not a string")
        iss = claims.get("iss")
        if iss != self._issuer:
            raise MalformedToken("token iss is not a string") if iss is not None and type(iss) is not str \
                else WrongIssuer("token from another issuer")
        aud = claims.get("aud")
        if type(aud) is not str or aud not in self._audiences:
            check_audience(aud, self._audiences)
        leeway = self._leeway
        if exp <= now - leeway:
            raise TokenExpired("token has expired")
        if iat > now + leeway or (nbf is not None and nbf > now + leeway):
            raise TokenNotYetValid("token is not valid yet")
        ttl = state.max_token_ttl
        if ttl <= 0 or exp - iat > ttl:
            raise LifetimeExceeded("token lifetime exceeds the issuer's maximum")
        start = record.activated_at if record.activated_at is not None else record.published_at
        end = record.retired_at if record.retired_at is not None else record.revoked_at
        if iat < start - leeway or (end is not None and iat > end + leeway):
            raise KeyNotActive("token issued when its key was not signing")
        revoked = state.revoked_tokens
        generation = revoked.generation
        if jti is not None:
            recent, deep = revoked.view  # a dict, and whether a compact base is behind it
            if jti in recent or (deep and jti in revoked):
                raise TokenRevoked("token is revoked")
        if sub is not None:
            cut = state.revoked_subjects.get(sub)
            if cut is not None and iat <= cut.revoked_at:
                raise TokenRevoked("token's subject is revoked")

        self._accepted += 1
        size = self._cache_size
        if not size:
            return claims  # no cache: nothing the caller could corrupt
        # The cache keeps the parsed claims; the caller gets a copy, deep where it must be.
        nested: tuple[str, ...] = ()
        if "[" in text or text.find("{", 1) >= 0:
            nested = tuple(k for k, v in claims.items() if type(v) is list or type(v) is dict)
        result = claims.copy()
        try:
            for name in nested:
                result[name] = thaw(result[name])
        except RecursionError:  # parsed just below the limit: too deep to copy
            raise MalformedToken("token claims nest too deeply") from None
        cache = self._cache
        cache[token] = [claims, exp, iat, kid, jti, sub, nested, generation]
        if len(cache) > size:
            try:
                cache.popitem(last=False)
            except KeyError:  # emptied by another thread meanwhile
                pass
        return result

    def _header(self, head: bytes) -> tuple[str, SignatureCheck]:
        """Parse a header not seen before; remember it with its key's signature check.

        A kid is its key's RFC 7638 thumbprint (KeyCache enforces it), so the key, its alg
        and the check bound to it never change for a kid: only the key's presence and state
        in the current state are read on every call.
        """
        kid, alg = parse_header(head)
        key = self._keys.verifying_key(kid)
        if key is None:
            self._unknown_kids += 1
            raise UnknownKey("token signed by an unknown key")
        if key.alg != alg:
            raise AlgorithmNotAllowed("token alg is not its key's algorithm")
        check = key.check  # bound to the key and its algorithm when the key was loaded
        if len(self._headers) >= _MAX_CACHED_HEADERS:  # many distinct valid headers: start over
            self._headers.clear()
        self._headers[head] = (kid, check)
        return kid, check
