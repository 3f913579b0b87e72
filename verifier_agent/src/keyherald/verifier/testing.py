"""An issuer in memory for service owners' own tests (as httpx.MockTransport is for httpx).

    from keyherald.verifier.testing import TestIssuer

    issuer = TestIssuer()
    agent = issuer.agent(audience="orders")      # bootstrapped, no Redis
    token = issuer.mint(sub="billing", aud="orders", scope="orders:read")
    assert agent.verify(token)["sub"] == "billing"
    issuer.revoke_subject("billing")             # reaches every agent it made, at once

Nothing is bypassed: the test issuer signs events and snapshots with its own control key,
and its agents open them with the trust anchor and fold them with the same State code as in
production, then validate with the real Validator. Only the transport (Redis) is missing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from keyherald.shared.chain import digest, new_log_id
from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.encoding import dumps
from keyherald.shared.envelope import ControlKey, TrustAnchor
from keyherald.shared.events import Event, EventType, KeyRecord, KeyState
from keyherald.shared.jwk import Algorithm, ControlAlgorithm, SigningKey
from keyherald.shared.jws import sign_compact
from keyherald.shared.state import State

from .agent import VerifierAgent
from .settings import VerifierSettings

__all__ = ["TestIssuer"]

TOKEN_TYP = "at+jwt"


class TestIssuer:
    """Signs tokens, rotates and revokes, and feeds every agent it made, all in memory."""

    __test__ = False  # not a pytest test class despite its name

    def __init__(
        self,
        issuer: str = "https://issuer.test",
        *,
        audience: str = "test",
        algorithm: Algorithm = "ES256",
        token_ttl: int = 300,
        rotation_period: int = 86_400,
        clock: Clock = system_clock,
        control_alg: ControlAlgorithm = "EdDSA",
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithm: Algorithm = algorithm
        self.token_ttl = int(token_ttl)
        self.rotation_period = int(rotation_period)
        self.clock = clock
        # Ed25519 unless asked: made in microseconds, where an RSA-3072 key (the issuer's
        # default) takes a tenth of a second per test. The agent opens both alike.
        self._control = ControlKey.generate(control_alg)
        self._state = State.empty(issuer, new_log_id())
        self._signing: dict[str, SigningKey] = {}
        self._agents: list[VerifierAgent] = []
        self._publish(EventType.LOG_STARTED, {"previous": None, "reason": "genesis"})
        self._publish(EventType.POLICY, {"max_token_ttl": self.token_ttl})
        first = self._new_key()
        self._key_event(EventType.KEY_PUBLISHED, first)
        self._key_event(EventType.KEY_ACTIVATED, first.model_copy(
            update={"state": KeyState.ACTIVE, "activated_at": first.published_at}))
        self._key_event(EventType.KEY_PUBLISHED, self._new_key())

    # -- what agents trust ---------------------------------------------------------------

    @property
    def trust_anchor(self) -> TrustAnchor:
        return self._control.anchor

    @property
    def state(self) -> State:
        return self._state

    @property
    def active_kid(self) -> str:
        active = self._state.active_key
        assert active is not None
        return active.kid

    def agent(self, audience: str | Iterable[str] | None = None, **settings: Any) -> VerifierAgent:
        """A bootstrapped agent (no Redis); later events of this issuer reach it at once."""
        values: dict[str, Any] = {
            "issuer": self.issuer,
            "audience": [audience] if isinstance(audience, str) else list(audience or [self.audience]),
            "trust_anchor": json.dumps(self.trust_anchor.key.jwk if self.trust_anchor.key else {}),
            "cache_path": None,
            "max_staleness": None,
        }
        values.update(settings)
        agent = VerifierAgent(VerifierSettings(**values), clock=self.clock)
        agent._load_signed(self._control.seal_snapshot(self._state.to_snapshot()))
        self._agents.append(agent)
        return agent

    # -- tokens ----------------------------------------------------------------------------

    def mint(
        self,
        *,
        sub: str = "test-client",
        aud: str | list[str] | None = None,
        scope: str | Iterable[str] | None = None,
        ttl: int | None = None,
        jti: str | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """A token as keyherald's token endpoint signs it (RFC 9068), with the active key."""
        now = int(self.clock())
        body: dict[str, Any] = {
            "iss": self.issuer, "sub": sub, "aud": aud if aud is not None else self.audience,
            "iat": now, "nbf": now, "exp": now + (self.token_ttl if ttl is None else int(ttl)),
            "jti": jti or uuid.uuid4().hex, "client_id": sub,
        }
        if scope is not None:
            body["scope"] = scope if isinstance(scope, str) else " ".join(scope)
        body.update(claims)
        key = self._signing[kid or self.active_kid]
        return sign_compact({"typ": TOKEN_TYP}, dumps(body), key)

    # -- operator actions --------------------------------------------------------------------

    def revoke_token(self, jti: str, expires_at: int | None = None) -> None:
        until = int(self.clock()) + self.token_ttl if expires_at is None else int(expires_at)
        self._publish(EventType.TOKEN_REVOKED, {"jti": jti, "expires_at": until})

    def revoke_subject(self, sub: str) -> None:
        now = int(self.clock())
        self._publish(EventType.SUBJECT_REVOKED, {"sub": sub, "revoked_at": now, "expires_at": now + self.token_ttl})

    def rotate(self) -> str:
        """Retire the active key, activate the standby, publish a new standby; the new kid."""
        now = int(self.clock())
        active, standby = self._state.active_key, self._standby()
        if active is not None:
            self._key_event(EventType.KEY_RETIRED, active.model_copy(update={
                "state": KeyState.RETIRED, "retired_at": now, "expires_at": now + self.token_ttl}))
        self._key_event(EventType.KEY_ACTIVATED, standby.model_copy(
            update={"state": KeyState.ACTIVE, "activated_at": now, "activates_at": now}))
        self._key_event(EventType.KEY_PUBLISHED, self._new_key())
        return standby.kid

    def revoke_key(self, kid: str | None = None) -> None:
        """Revoke a key (the active one by default, replaced at once by the standby)."""
        record = self._state.keys[kid or self.active_kid]
        now = int(self.clock())
        if record.state is KeyState.ACTIVE:
            self.rotate()
        self._key_event(EventType.KEY_REVOKED, self._state.keys[record.kid].model_copy(update={
            "state": KeyState.REVOKED, "revoked_at": now, "expires_at": now + self.token_ttl}))

    def heartbeat(self) -> None:
        """Proof of life: what keeps agents with ``max_staleness`` accepting tokens."""
        self._publish(EventType.HEARTBEAT, {"active_kid": self.active_kid})

    # -- machinery ---------------------------------------------------------------------------

    def _new_key(self) -> KeyRecord:
        key = SigningKey.generate(self.algorithm)
        self._signing[key.kid] = key
        now = int(self.clock())
        return KeyRecord(
            kid=key.kid, alg=self.algorithm, jwk=key.public.jwk, state=KeyState.PUBLISHED,
            published_at=now, activates_at=now + self.rotation_period,
        )

    def _standby(self) -> KeyRecord:
        published = self._state.keys_in(KeyState.PUBLISHED)
        assert published, "no standby key"
        return published[-1]

    def _key_event(self, kind: EventType, record: KeyRecord) -> None:
        self._publish(kind, {"key": record.model_dump(mode="json")})

    def _publish(self, kind: EventType, data: dict[str, Any]) -> None:
        state = self._state
        event = Event(log=state.log, seq=state.seq + 1, prev=state.head, type=str(kind), time=self.clock(),
                      issuer=self.issuer, data=data)
        sealed = self._control.seal_event(event)
        state.apply(event, digest(sealed))
        for agent in self._agents:
            agent._feed(sealed)

    def __repr__(self) -> str:
        return f"TestIssuer(issuer={self.issuer!r}, seq={self._state.seq})"
