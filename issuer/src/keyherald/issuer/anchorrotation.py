"""Rotating the trust anchor: a new control key, introduced by the current one.

The new key is stored (sealed) in a slot of its own first, so that a rotation interrupted
after its event was appended is finished by any replica (it finds the key there); then one
``anchor.rotated`` event, signed by the current key, carries the link (endorsed by the
current key, cross-signed by the new one); from the next event on every writer signs with the
new key, and a checkpoint is written at once so that fresh agents find the chain in it.
Running agents move their pin when they apply the event; agents started later with the old
pin follow the chain kept in the checkpoint (keyherald.shared.anchorchain).
"""

from __future__ import annotations

from keyherald.shared.anchorchain import make_link
from keyherald.shared.envelope import ControlKey
from keyherald.shared.events import Event, EventType
from keyherald.shared.state import State

from .context import IssuerContext
from .drafts import Draft
from .errors import IssuerError

__all__ = ["rotate_anchor"]


async def rotate_anchor(ctx: IssuerContext, *, revoke_previous: bool = False) -> tuple[ControlKey, list[Event]]:
    """Rotate to a new control key of the same kind; returns it and the events appended."""
    old = ctx.control
    new = ControlKey.generate(old.alg)
    sealed = ctx.keystore.sealed_control(new)
    await ctx.redis.set(ctx.names.control_key_next, sealed)
    ctx.log.signer.introduce(new)  # this writer never needs the slot back (a Redis writer may empty it)

    async def mutation(state: State, now: float) -> list[Draft]:
        current = ctx.log.control
        if current.anchor.thumbprint != old.anchor.thumbprint:
            raise IssuerError("the anchor was rotated by someone else meanwhile: nothing done (look again)")
        link = make_link(current, new, at=now, revoke_previous=revoke_previous)
        return [(str(EventType.ANCHOR_ROTATED), link.model_dump(mode="json"))]

    events = await ctx.log.commit(mutation)
    await ctx.log.sync()  # now signing with the new key, from memory: the key file follows it
    await ctx.redis.set(ctx.names.control_key, sealed)
    await ctx.redis.delete(ctx.names.control_key_next)
    await ctx.log.checkpoint(force=True)
    return new, events
