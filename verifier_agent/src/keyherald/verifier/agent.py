"""The agent a service embeds: bootstrap, follow in the background, verify offline.

    agent = VerifierAgent(VerifierSettings(audience="orders"))
    async with agent:                  # returns once bootstrapped and current
        claims = agent.verify(token)   # synchronous, CPU only, no I/O

Start-up (:mod:`.bootstrap`) reads the checkpoint and the tail from Redis, or the cache file
when Redis cannot be read or holds a log older than the file; then it waits, up to
``startup_timeout``, until the state is current: its newest event within the freshness
bound. Anything else that goes wrong raises :class:`BootstrapError` once the timeout passed.
A validly signed log of another issuer, or of a protocol version this agent does not speak,
fails at once: that is a configuration error, and waiting would not fix it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any, Self

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.connect import close_client
from keyherald.shared.events import Event, KeyState
from keyherald.shared.lineage import freshness_bound
from keyherald.shared.presence import PresenceRecord

from .bootstrap import Boot, is_fresh
from .cachefile import CacheWriter
from .catchup import MaterialError, from_material
from .errors import BootstrapError
from .follower import Follower
from .keycache import KeyCache
from .presence import PresenceWriter, default_agent_id
from .settings import VerifierSettings
from .signedstate import Material, SignedState
from .source import LogSource, follow_clients
from .status import AgentStatus, KeyStatus
from .threaded import BackgroundLoop
from .validator import Validator

__all__ = ["VerifierAgent"]

log = logging.getLogger("keyherald.verifier")

_RETRY_FIRST = 0.05
_RETRY_CAP = 1.0


class VerifierAgent:
    """Follows the issuer's signed log and validates tokens against what it holds."""

    def __init__(
        self,
        settings: VerifierSettings | None = None,
        *,
        clock: Clock = system_clock,
        redis: Redis | None = None,
        client_name: str | None = None,
    ) -> None:
        """``client_name``: what the agent's Redis connection is called (CLIENT LIST); by
        default ``keyherald-agent:<namespace>``, which the fleet view counts."""
        self.settings = settings if settings is not None else VerifierSettings()
        self._client_name = client_name
        self._clock = clock
        self._own_redis = redis is None
        self._redis = redis
        self._primary: Redis | None = None
        """The primary, for the presence record, when the log is read from a replica."""
        self.keys = KeyCache(self.settings.issuer)
        self.keys.configure(self.settings.max_staleness, self.settings.leeway)
        self._signed = SignedState(self.keys, self.settings.anchor(), issuer=self.settings.issuer)
        self._signed.listeners.append(self._on_event)
        self._signed.keep_texts = self.settings.cache_path is not None
        self.validator = Validator(
            self.keys,
            issuer=self.settings.issuer,
            audience=self.settings.audience,
            leeway=self.settings.leeway,
            cache_size=self.settings.token_cache_size,
            clock=clock,
        )
        self._follower: Follower | None = None
        self._writer = CacheWriter(self.settings.cache_path, self._signed) if self.settings.cache_path else None
        self._tasks: list[asyncio.Task[None]] = []
        self._follow_task: asyncio.Task[None] | None = None
        self._booting: asyncio.Future[None] | None = None
        self._stop_requested = False
        self._source = "none"
        self._background: BackgroundLoop | None = None
        self._boot: Boot | None = None
        self.agent_id = self.settings.agent_id or default_agent_id()
        self.presence: PresenceWriter | None = None

    # -- the request path ---------------------------------------------------------------

    def verify(self, token: str | bytes) -> dict[str, Any]:
        """The token's claims, or InvalidToken (with a ``reason``). CPU only, any thread."""
        return self.validator.verify(token)

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _on_event(self, event: Event) -> None:
        """An event applied: a state that was not current becomes so once an event is fresh."""
        if not self.keys.current and is_fresh(self.keys.state, self._clock()):
            self.keys.set_current(True)
            log.info("the log is current (seq %d): accepting tokens", self.keys.state.seq)

    async def start(self) -> None:
        """Bootstrap (or raise BootstrapError), then follow in the background."""
        if self._tasks:
            raise RuntimeError("the agent is already running")
        if self._source == "memory":
            return  # fed in memory (keyherald.verifier.testing): nothing to follow
        if self._redis is None:
            self._redis, self._primary = await follow_clients(
                self.settings.redis_url, self.settings.redis_read_url, seed=self.agent_id,
                presence=self.settings.presence)
        source = LogSource(self._redis, self.settings.names, own_connection=self._own_redis)
        if self._client_name is not None:
            source.client_name = self._client_name
        self._boot = Boot(self.settings, self._signed, source, self._clock)
        self._stop_requested = False
        boot = self._booting = asyncio.ensure_future(
            asyncio.wait_for(self._bootstrap(source), self.settings.startup_timeout)
        )
        try:
            await boot
        except asyncio.CancelledError:
            self._stop_requested = False
            await self._abandon()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller was cancelled
            raise BootstrapError("the agent was stopped while it was starting") from None
        except TimeoutError:
            await self._abandon()
            why = self._boot.why or "no answer"
            raise BootstrapError(
                f"could not bootstrap within {self.settings.startup_timeout:g}s: {why}{self._boot.cache_note}"
            ) from None
        except BootstrapError:
            await self._abandon()
            raise
        except Exception as exc:
            await self._abandon()
            raise BootstrapError(f"could not bootstrap: unexpected {type(exc).__name__}") from None
        except BaseException:
            await self._abandon()
            raise
        finally:
            self._booting = None
        if self._stop_requested:  # stop() came as the bootstrap ended: nothing may start now
            self._stop_requested = False
            await self._abandon()
            raise BootstrapError("the agent was stopped while it was starting")
        self._source = self._boot.origin
        state = self.keys.state
        log.info("agent %s follows log %s from seq %d (started from %s)", self.agent_id, state.log[:8], state.seq,
                 self._source)
        if self._writer is not None:
            self._tasks.append(asyncio.create_task(self._writer.run(), name="keyherald-cache-writer"))

    async def _bootstrap(self, source: LogSource) -> None:
        """Load a state (Redis, or the cache file), then follow until it is current."""
        assert self._boot is not None
        delay = _RETRY_FIRST
        while True:
            try:
                loaded = await self._boot.attempt()
            except BootstrapError:
                raise
            except Exception as exc:  # anything else read from Redis: retry, never a raw traceback
                log.warning("bootstrap attempt failed (%s); retrying", type(exc).__name__)
                self._boot.why = f"reading the log failed ({type(exc).__name__})"
                loaded = False
            if loaded:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_CAP)
        presence = None
        if self.settings.presence:
            writes = source if self._primary is None else LogSource(self._primary, self.settings.names)
            presence = self.presence = PresenceWriter(
                writes, self.settings.names, self.agent_id, self.settings.presence_interval, self._presence_record
            )
        follower = self._follower = Follower(source, self.settings.names, self._signed, presence=presence)
        follower.start_from_state()
        follower.connected = self._boot.origin == "redis"
        self._follow_task = asyncio.create_task(follower.run(), name="keyherald-follower")
        self._tasks.append(self._follow_task)
        while not self.keys.current:
            await asyncio.sleep(0.01)

    async def _abandon(self) -> None:
        """A start that failed: nothing may stay running."""
        await self._stop_tasks()
        await self._close_redis()

    async def stop(self) -> None:
        """Stop following and let go of Redis; a start still bootstrapping ends with
        BootstrapError (and nothing left running)."""
        booting = self._booting
        if booting is not None:
            self._stop_requested = True
            booting.cancel()
            await asyncio.wait([booting])
        running = bool(self._tasks)
        await self._stop_tasks()
        if running and self.presence is not None:
            with contextlib.suppress(RedisError, OSError):
                await asyncio.wait_for(self.presence.remove(), 2)
        if self._writer is not None:
            await self._writer.flush()
        await self._close_redis()

    async def _stop_tasks(self) -> None:
        tasks, self._tasks, self._follow_task = self._tasks, [], None
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=0.5)
            if pending and self._redis is not None:
                # redis-py (8.x) now and then swallows a cancel that lands mid-command and
                # goes on blocking; dropping the connections makes the read fail, and the
                # follower then honours the pending cancel.
                with contextlib.suppress(RedisError, OSError, AttributeError):  # no pool: a cluster
                    await self._redis.connection_pool.disconnect()
                await asyncio.wait(pending, timeout=5)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("a background task of the agent failed: %r", task.exception())
        if self._follower is not None and tasks:
            with contextlib.suppress(RedisError, OSError):
                await self._follower.source.close()

    async def _close_redis(self) -> None:
        if self._own_redis:
            for client in (self._redis, self._primary):
                if client is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await close_client(client)
            self._redis = self._primary = None

    # -- synchronous applications -------------------------------------------------------

    def start_background(self) -> None:
        """Run the agent on a thread of its own (Flask, Django): returns once bootstrapped."""
        if self._background is not None:
            raise RuntimeError("the agent is already running in the background")
        loop = BackgroundLoop()
        loop.start()
        try:
            loop.call(self.start())
        except BaseException:
            loop.stop()
            raise
        self._background = loop

    def stop_background(self) -> None:
        loop, self._background = self._background, None
        if loop is not None:
            try:
                loop.call(self.stop())
            finally:
                loop.stop()

    def __enter__(self) -> Self:
        self.start_background()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_background()

    # -- observation ------------------------------------------------------------------------

    def _presence_record(self) -> PresenceRecord:
        status = self.status()
        return PresenceRecord(
            agent_id=self.agent_id, audience=list(self.settings.audience),
            version=self.presence.version if self.presence else "", log=status.log, anchor=status.anchor,
            seq=status.seq,
            event_time=self.keys.state.time, connected=status.connected, stale=status.stale,
            refusing=status.refusing, refused_events=status.refused_events,
            interval=self.settings.presence_interval, written_at=self._clock(),
        )

    def status(self) -> AgentStatus:
        state, signed, follower, keys = self.keys.state, self._signed, self._follower, self.keys
        bootstrapped = keys.bootstrapped
        age = self._clock() - state.time if bootstrapped else None
        fresh_for = freshness_bound(state.heartbeat_interval)
        counters = dict(self.validator.counters)
        task = self._follow_task
        following = task is not None and not task.done()
        return AgentStatus(
            issuer=self.settings.issuer,
            namespace=self.settings.namespace,
            bootstrapped=bootstrapped,
            source=self._source,
            connected=bool(follower and follower.connected and following),
            following=following,
            seq=state.seq,
            age=age,
            stale=age is None or age > fresh_for or not keys.current,
            refusing=age is None or age > keys.stale_after,
            max_staleness=keys.stale_after if keys.current else None,
            freshness=fresh_for,
            log=state.log,
            anchor=signed.anchor.thumbprint,
            keys=tuple(KeyStatus(k.kid, k.alg, str(k.state)) for k in state.keys_in(*KeyState)),
            revoked_tokens=len(state.revoked_tokens),
            revoked_subjects=len(state.revoked_subjects),
            refused_events=signed.refused_total,
            refused_by_reason=dict(signed.refused),
            resyncs=signed.resyncs,
            resets=signed.resets,
            disconnects=follower.disconnects if follower else 0,
            reconnects=follower.reconnects if follower else 0,
            follow_failures=follower.failures if follower else 0,
            unknown_kid=counters.get("unknown_kids", 0),
            tokens=counters,
        )

    # -- in-memory feeding (keyherald.verifier.testing) ----------------------------------

    def _load_signed(self, snapshot: str, events: tuple[str, ...] = (), *, source: str = "memory") -> None:
        """Load signed material without Redis; every signature and link is checked as from Redis."""
        try:
            candidate = from_material(self._signed, Material(snapshot, events))
        except MaterialError as exc:
            raise BootstrapError(f"the signed material does not verify: {exc}") from None
        self._signed.load_state(candidate.state, candidate.material, current=True)
        self._source = source

    def _feed(self, event: str) -> None:
        self._signed.offer(event)

    def __repr__(self) -> str:
        return f"VerifierAgent(issuer={self.settings.issuer!r}, namespace={self.settings.namespace!r})"
