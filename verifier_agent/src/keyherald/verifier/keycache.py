"""The agent's in-memory view of the issuer: the shared state fold plus parsed public keys.

Written only by the follower (one task), read by ``verify`` on any thread: every update
swaps whole objects, so a reader never sees half an event.
"""

from __future__ import annotations

from keyherald.shared.events import Event, KeyRecord, Snapshot
from keyherald.shared.jwk import VerifyingKey
from keyherald.shared.state import Outcome, State

__all__ = ["KeyCache"]


class KeyCache:
    def __init__(self, issuer: str) -> None:
        self.state = State(issuer=issuer)
        self._verifying: dict[str, VerifyingKey] = {}
        self.bootstrapped = False

    def load_snapshot(self, snapshot: Snapshot) -> None:
        """Replace everything with a verified snapshot (bootstrap or resync)."""
        state = State.from_snapshot(snapshot)
        self._verifying = self._parse_keys(state.keys, self._verifying)
        self.state = state
        self.bootstrapped = True

    def apply(self, event: Event) -> Outcome:
        """Fold a verified event in. Raises ValueError, changing nothing, on malformed data."""
        outcome = self.state.check(event)
        if outcome is not Outcome.APPLIED:
            return outcome
        state = State.from_snapshot(self.state.to_snapshot()) if event.type.startswith("key.") else self.state
        outcome = state.apply(event)
        if state is not self.state:
            self._verifying = self._parse_keys(state.keys, self._verifying)
            self.state = state
        return outcome

    @staticmethod
    def _parse_keys(keys: dict[str, KeyRecord], old: dict[str, VerifyingKey]) -> dict[str, VerifyingKey]:
        parsed: dict[str, VerifyingKey] = {}
        for kid, record in keys.items():
            known = old.get(kid)
            if known is None:
                known = VerifyingKey.from_jwk(record.jwk)
                if known.kid != kid or known.alg != record.alg:
                    raise ValueError(f"key {kid} does not match its published JWK")
            parsed[kid] = known
        return parsed

    def record(self, kid: str) -> KeyRecord | None:
        return self.state.keys.get(kid)

    def verifying_key(self, kid: str) -> VerifyingKey | None:
        return self._verifying.get(kid)
