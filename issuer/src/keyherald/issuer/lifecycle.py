"""Key lifecycle decisions as pure functions of (state, now, policy): no I/O here.

A key is published (announced ahead of use), then active (signs), then retired
(verifies only), then expired (dropped once nothing it signed can still be valid).
There is always a standby: the next key, published one rotation period before it signs.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from keyherald.shared.events import REVOCATION_GRACE, EventType, KeyRecord, KeyState
from keyherald.shared.jwk import Algorithm, VerifyingKey, token_algorithm
from keyherald.shared.state import State

from .errors import KeyNotFound
from .eventlog import Draft

__all__ = [
    "KeySource",
    "Policy",
    "describe",
    "expired_kids",
    "forgotten_revocation",
    "heartbeat_due",
    "key_expiry",
    "plan",
    "revoke_key",
    "rotate",
    "rotation_due",
    "standby",
]


class KeySource(Protocol):
    """Where new keys come from: a fresh one on every ``pop()``."""

    def pop(self, index: int = 0) -> VerifyingKey: ...


@dataclass(frozen=True)
class Policy:
    algorithm: Algorithm
    rotation_period: float
    token_ttl: int
    heartbeat_interval: float


def _key_draft(kind: EventType, record: KeyRecord) -> Draft:
    return str(kind), {"key": record.model_dump(mode="json")}


def _published(key: VerifyingKey, now: int, activates_at: int) -> KeyRecord:
    return KeyRecord(
        kid=key.kid, alg=token_algorithm(key.alg), jwk=key.jwk, state=KeyState.PUBLISHED,
        published_at=now, activates_at=activates_at,
    )


def key_expiry(stopped_at: int, policy: Policy) -> int:
    """When a key that stopped signing at ``stopped_at`` may go: its last token's exp, plus
    the largest leeway an agent may grant (REVOCATION_GRACE), plus a tick for replicas that
    signed with it a moment after the rotation."""
    return stopped_at + policy.token_ttl + REVOCATION_GRACE + 5


def standby(state: State) -> KeyRecord | None:
    published = state.keys_in(KeyState.PUBLISHED)
    return published[-1] if published else None


def rotation_due(state: State, now: float, policy: Policy) -> bool:
    active = state.active_key
    if active is None:
        return True
    nxt = standby(state)
    planned = nxt.activates_at if nxt and nxt.activates_at else (active.activated_at or 0) + policy.rotation_period
    return now >= planned


def heartbeat_due(state: State, now: float, policy: Policy) -> bool:
    """Any event proves liveness; a heartbeat fills the silence."""
    return state.seq == 0 or now - state.time >= policy.heartbeat_interval


def expired_kids(state: State, now: float) -> list[str]:
    return [
        k.kid for k in state.keys.values()
        if k.state in (KeyState.RETIRED, KeyState.REVOKED) and k.expires_at is not None and k.expires_at <= now
    ]


def rotate(state: State, now: float, policy: Policy, fresh: VerifyingKey) -> list[Draft]:
    """Retire the active key, activate the standby, publish ``fresh`` as the new standby."""
    t = int(now)
    drafts: list[Draft] = []
    active, nxt = state.active_key, standby(state)
    if nxt is None:
        raise KeyNotFound("there is no standby key to activate")
    if active is not None:
        drafts.append(_key_draft(EventType.KEY_RETIRED, active.model_copy(
            update={"state": KeyState.RETIRED, "retired_at": t, "expires_at": key_expiry(t, policy)})))
    drafts.append(_key_draft(EventType.KEY_ACTIVATED, nxt.model_copy(
        update={"state": KeyState.ACTIVE, "activated_at": t, "activates_at": t})))
    drafts.append(_key_draft(EventType.KEY_PUBLISHED, _published(fresh, t, t + int(policy.rotation_period))))
    return drafts


def revoke_key(state: State, kid: str, now: float, policy: Policy, fresh: VerifyingKey) -> list[Draft]:
    """Revoke a key; if it was active or the standby, the rotation that keeps signing going."""
    record = state.keys.get(kid)
    if record is None:
        raise KeyNotFound(f"no key with kid {kid}")
    if record.state is KeyState.REVOKED:
        return []
    t = int(now)
    expires = key_expiry(t, policy) if record.state is not KeyState.RETIRED else record.expires_at
    revoked = record.model_copy(update={"state": KeyState.REVOKED, "revoked_at": t, "expires_at": expires})
    drafts = [_key_draft(EventType.KEY_REVOKED, revoked)]
    if record.state is KeyState.ACTIVE:
        nxt = standby(state)
        if nxt is None:
            raise KeyNotFound("there is no standby key to activate")
        drafts.append(_key_draft(EventType.KEY_ACTIVATED, nxt.model_copy(
            update={"state": KeyState.ACTIVE, "activated_at": t, "activates_at": t})))
        drafts.append(_key_draft(EventType.KEY_PUBLISHED, _published(fresh, t, t + int(policy.rotation_period))))
    elif record.state is KeyState.PUBLISHED:
        active = state.active_key
        planned = (active.activated_at or t) + int(policy.rotation_period) if active else t
        drafts.append(_key_draft(EventType.KEY_PUBLISHED, _published(fresh, t, max(planned, t))))
    return drafts


def forgotten_revocation(state: State, revoked: Collection[str]) -> KeyRecord | None:
    """A key the log holds as not revoked that a writer saw revoked (a log that went back or
    forgot): it must be revoked again before anything signs with it."""
    for record in state.keys_in(KeyState.ACTIVE, KeyState.PUBLISHED, KeyState.RETIRED):
        if record.kid in revoked:
            return record
    return None


def plan(
    state: State, now: float, policy: Policy, fresh: KeySource, *, revoked: Collection[str] = ()
) -> list[Draft]:
    """Everything the leader should append now; takes keys from ``fresh`` as it needs them.
    ``revoked``: kids this writer knows revoked whatever the log says (its local record)."""
    t = int(now)
    forgotten = forgotten_revocation(state, revoked)
    if forgotten is not None:
        return revoke_key(state, forgotten.kid, now, policy, fresh.pop(0))
    drafts: list[Draft] = []
    if state.max_token_ttl != policy.token_ttl or state.heartbeat_interval != policy.heartbeat_interval:
        drafts.append((str(EventType.POLICY), {
            "max_token_ttl": policy.token_ttl, "heartbeat_interval": policy.heartbeat_interval}))
    for kid in expired_kids(state, now):
        drafts.append((str(EventType.KEY_EXPIRED), {"kid": kid}))
    active, nxt = state.active_key, standby(state)
    if active is None and nxt is None:
        # Genesis: nothing is signed yet, so the first key may activate as it is announced.
        first = fresh.pop(0)
        record = _published(first, t, t)
        drafts.append(_key_draft(EventType.KEY_PUBLISHED, record))
        drafts.append(_key_draft(EventType.KEY_ACTIVATED, record.model_copy(
            update={"state": KeyState.ACTIVE, "activated_at": t})))
        drafts.append(_key_draft(EventType.KEY_PUBLISHED, _published(fresh.pop(0), t, t + int(policy.rotation_period))))
    elif nxt is None:
        base = active.activated_at if active and active.activated_at else t
        activates = max(t, base + int(policy.rotation_period))
        drafts.append(_key_draft(EventType.KEY_PUBLISHED, _published(fresh.pop(0), t, activates)))
    elif active is None or rotation_due(state, now, policy):
        drafts.extend(rotate(state, now, policy, fresh.pop(0)))
    if not drafts and heartbeat_due(state, now, policy):
        active = state.active_key
        drafts.append((str(EventType.HEARTBEAT), {"active_kid": active.kid if active else None}))
    return drafts


def describe(record: KeyRecord) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude={"jwk"})
