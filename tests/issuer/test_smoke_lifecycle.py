from keyherald.issuer.context import IssuerContext
from keyherald.issuer.rotation import Rotator
from keyherald.shared import KeyState


async def test_genesis_publishes_an_active_key_and_a_standby(issuer_ctx: IssuerContext) -> None:
    events = await Rotator(issuer_ctx).tick()
    assert [e.type for e in events] == ["policy.updated", "key.published", "key.activated", "key.published"]
    state = await issuer_ctx.log.read_state()
    assert sorted(k.state for k in state.keys.values()) == [KeyState.ACTIVE, KeyState.PUBLISHED]
