"""The leader's look at the keys beside the log: the control key, the signing keys and the
client records. Anyone who can write Redis can overwrite them with junk or another type,
which would stop every replica that starts afterwards (and every ``keyherald`` command).
The leader holds the control key and the signing keys it loaded, so it writes them back;
client records it cannot rebuild (it never holds them all), so a hash made junk is removed
and reported: the clients are then unknown (401), not an outage of the token endpoint.

Nothing here trusts what it reads. The leader's control key is the one the log names (it
follows anchor rotations before it judges), so any other blob in its slot (junk, another
slot's seal, a key the anchor was rotated away from) is replaced by it; the same for each
signing key it holds.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import ResponseError

from keyherald.shared.events import KeyState

from .context import IssuerContext
from .errors import DamagedBlob
from .eviction import unsafe_policy
from .kek import WrongKEK

__all__ = ["StoreAudit"]

log = logging.getLogger("keyherald.issuer")

POLICY_EVERY = 60.0

REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
"""SET KEYS[1] to ARGV[2] only if it still holds ARGV[1]."""


class StoreAudit:
    def __init__(self, ctx: IssuerContext) -> None:
        self._ctx = ctx
        self._replace = ctx.redis.register_script(REPLACE)
        self._verified_blob: str | None = None
        self._policy_at = float("-inf")
        self._clients_destroyed = False
        self.keys_destroyed = False
        """The last audit found the signing keys' hash destroyed (some private keys may be lost)."""
        self.problems: list[str] = []
        """What the last audit found and could not repair (shown on /healthz)."""

    async def run(self) -> list[str]:
        """Repair what can be repaired; returns what was repaired (problems go to ``problems``)."""
        ctx = self._ctx
        names = ctx.names
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for key in (names.control_key, names.signing_keys, names.clients):
                pipe.type(key)
            control_type, keys_type, clients_type = [str(t) for t in await pipe.execute()]
        repaired: list[str] = []
        problems: list[str] = []
        control = await self._control(control_type, problems)
        if control:
            repaired.append(control)
        self.keys_destroyed = keys_type != "hash"
        if keys_type not in ("none", "hash"):
            await ctx.redis.delete(names.signing_keys)
            repaired.append(f"the signing keys were a {keys_type}: written back from memory")
        if keys_type != "hash":
            await ctx.keystore.restore(ctx.control)
        else:
            state = ctx.log.state
            usable = {k.kid for k in state.keys_in(KeyState.ACTIVE, KeyState.PUBLISHED)} if state is not None else set()
            fixed = await ctx.keystore.repair_fields(usable)
            if fixed:
                repaired.append(f"signing keys {', '.join(fixed)} were missing or not theirs: written back from memory")
        if clients_type not in ("none", "hash"):
            await ctx.redis.delete(names.clients)
            repaired.append(f"the client records were a {clients_type}: removed")
            self._clients_destroyed = True
        elif clients_type == "hash":
            self._clients_destroyed = False  # an operator created clients again (or restored them)
        if self._clients_destroyed:
            problems.append("the client records were destroyed in Redis: restore a backup or create the clients again")
        problems.extend(await self._policy())
        for line in repaired:
            log.error("Redis was written by someone else: %s", line)
        self.problems = problems
        return repaired

    async def _control(self, kind: str, problems: list[str]) -> str | None:
        ctx = self._ctx
        key = ctx.names.control_key
        ours = ctx.keystore.sealed_control(ctx.control)
        if kind == "none":
            await ctx.redis.set(key, ours, nx=True)
            return "the control key was gone: written back"
        if kind != "string":
            await ctx.redis.delete(key)
            await ctx.redis.set(key, ours, nx=True)
            self._verified_blob = None
            return f"the control key was a {kind}: written back"
        try:
            blob = await ctx.redis.get(key)
        except ResponseError:
            return None  # changed type in between: the next audit sees it
        if blob is None or blob == self._verified_blob:
            return None
        if self._opens_to_ours(str(blob)):
            self._verified_blob = str(blob)
            return None
        await ctx.log.sync()  # an anchor rotation may have moved the log on: judge against its key
        if self._opens_to_ours(str(blob)):
            self._verified_blob = str(blob)
            return None
        # Compare-and-set on what was judged: a rotation by another writer meanwhile wins.
        if not await self._replace(keys=[key], args=[blob, ctx.keystore.sealed_control(ctx.control)]):
            return None
        self._verified_blob = None
        return "the control key was not the one the log names (junk, another seal, or an older key): written back"

    def _opens_to_ours(self, blob: str) -> bool:
        try:
            return self._ctx.keystore.open_control(blob).anchor.thumbprint == self._ctx.control.anchor.thumbprint
        except (DamagedBlob, WrongKEK):
            return False

    async def _policy(self) -> list[str]:
        now = time.monotonic()
        if now - self._policy_at < POLICY_EVERY:
            return [p for p in self.problems if "maxmemory-policy" in p]
        self._policy_at = now
        try:
            reply = await self._ctx.redis.config_get("maxmemory-policy")
        except ResponseError:
            return []
        policy = str(reply.get("maxmemory-policy", "")) if isinstance(reply, dict) else ""
        if unsafe_policy(policy):
            return [f"Redis maxmemory-policy is {policy}: it may evict keyherald's keys (set it to noeviction)"]
        return []
