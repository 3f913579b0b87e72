"""A large checkpoint sealed in small steps is the very checkpoint sealed at once, byte for byte."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from keyherald.issuer import checkpointseal
from keyherald.issuer.checkpointseal import seal_checkpoint
from keyherald.shared.chain import new_log_id
from keyherald.shared.envelope import ControlKey
from keyherald.shared.events import SubjectRevocation
from keyherald.shared.jwk import SigningKey
from keyherald.shared.revocations import RevokedTokens, group_items
from keyherald.shared.state import State


@pytest.mark.parametrize(("count", "ends"), [(10, 3600), (1000, 3600), (5000, 3600), (5000, 3)])
def test_sealing_in_steps_gives_the_same_bytes(count: int, ends: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups of one end span several steps when few ends are shared by many tokens (an incident)."""
    monkeypatch.setattr(checkpointseal, "STEP", 64)
    control = ControlKey(SigningKey("EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32))))
    rng = random.Random(count)
    odd = ['q"uote', "back\\slash", "é-accent", "tab\tin", "", "revoked_tokens", "zz\u2028"]
    jtis = [*odd, *(f"{rng.choice('abcXYZ-_09')}{rng.getrandbits(48):x}" for _ in range(count))]
    state = State.empty("https://issuer.example", new_log_id(), seq=7)
    state.revoked_tokens = RevokedTokens((j, 1_800_000_000 + rng.randrange(ends)) for j in jtis)
    state.revoked_subjects = {"orders": SubjectRevocation(revoked_at=1_799_999_000, expires_at=1_800_000_300)}
    sealed = seal_checkpoint(control, state)
    assert sealed.text == control.seal_snapshot(state.to_snapshot())
    opened = control.anchor.open_snapshot(sealed.text).revoked_tokens
    assert dict(group_items(opened)) == dict(state.revoked_tokens.items())
    assert [end for end, _ in opened] == sorted({end for _, end in state.revoked_tokens.items()})
