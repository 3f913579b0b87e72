"""The agent a service embeds: bootstrap, follow in the background, verify offline.

    agent = VerifierAgent(VerifierSettings(audience="orders"))
    async with agent:                  # returns once bootstrapped (Redis, or the cache file)
        claims = agent.verify(token)   # synchronous, CPU only, no I/O

Start-up tries Redis first. If Redis cannot be reached, holds no snapshot, or holds one the
trust anchor refuses (garbage, a forgery: anyone who can write Redis can put one there, and
the issuer's next append replaces it), and ``cache_path`` holds a file whose signatures
verify, the agent boots from it and keeps following in the background. Otherwise it retries
until ``startup_timeout`` and raises :class:`BootstrapError`, as it does for anything else
that goes wrong. Only a validly signed snapshot of another issuer fails at once: that is a
configuration error, and waiting would not fix it.
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
from keyherald.shared.errors import ProtocolError
from keyherald.shared.errors import WrongIssuer as ForeignLog
from keyherald.shared.events import KeyState

from .cachefile import CacheFileError, CacheWriter, load_into, read_material
from .errors import BootstrapError
from .follower import Follower, NoSnapshot, connect
from .keycache import KeyCache
from .settings import VerifierSettings
from .signedstate import Material, SignedState
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
    ) -> None:
        self.settings = settings if settings is not None else VerifierSettings()
        self._clock = clock
        self._own_redis = redis is None
        self._redis = redis
        self.keys = KeyCache(self.settings.issuer)
        self._signed = SignedState(self.keys, self.settings.anchor(), issuer=self.settings.issuer)
        self.validator = Validator(
            self.keys,
            issuer=self.settings.issuer,
            audience=self.settings.audience,
            leeway=self.settings.leeway,
            max_staleness=self.settings.max_staleness,
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
        self._why: str | None = None
        self._cache_note = ""

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

    async def start(self) -> None:
        """Bootstrap (or raise BootstrapError), then follow in the background."""
        if self._tasks:
            raise RuntimeError("the agent is already running")
        if self._source == "memory":
            return  # fed in memory (keyherald.verifier.testing): nothing to follow
        if self._redis is None:
            self._redis = connect(self.settings.redis_url)
        follower = self._follower = Follower(
            self._redis, self.settings.names, self._signed, own_connection=self._own_redis
        )
        self._stop_requested = False
        boot = self._booting = asyncio.ensure_future(
            asyncio.wait_for(self._bootstrap(follower), self.settings.startup_timeout)
        )
        try:
            await boot
        except asyncio.CancelledError:
            self._stop_requested = False
            await self._close_redis()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller was cancelled
            raise BootstrapError("the agent was stopped while it was starting") from None
        except TimeoutError:
            await self._close_redis()
            raise BootstrapError(
                f"could not bootstrap within {self.settings.startup_timeout:g}s: "
                f"{self._why or 'no answer'}{self._cache_note}"
            ) from None
        except BootstrapError:
            await self._close_redis()
            raise
        except Exception as exc:
            await self._close_redis()
            raise BootstrapError(f"could not bootstrap: unexpected {type(exc).__name__}") from None
        except BaseException:
            await self._close_redis()
            raise
        finally:
            self._booting = None
        if self._stop_requested:  # stop() came as the bootstrap ended: nothing may start now
            self._stop_requested = False
            await self._close_redis()
            raise BootstrapError("the agent was stopped while it was starting")
        self._follow_task = asyncio.create_task(follower.run(), name="keyherald-follower")
        self._tasks.append(self._follow_task)
        if self._writer is not None:
            self._tasks.append(asyncio.create_task(self._writer.run(), name="keyherald-cache-writer"))

    async def stop(self) -> None:
        """Stop following and let go of Redis; a start still bootstrapping ends with
        BootstrapError (and nothing left running)."""
        booting = self._booting
        if booting is not None:
            self._stop_requested = True
            booting.cancel()
            await asyncio.wait([booting])
        tasks, self._tasks, self._follow_task = self._tasks, [], None
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=0.5)
            if pending and self._redis is not None:
                # redis-py (8.x) now and then swallows a cancel that lands mid-command and
                # goes on blocking; dropping the connections makes the read fail, and the
                # follower then honours the pending cancel.
                with contextlib.suppress(RedisError, OSError):
                    await self._redis.connection_pool.disconnect()
                await asyncio.wait(pending, timeout=5)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("a background task of the agent failed: %r", task.exception())
        if self._follower is not None and tasks:
            with contextlib.suppress(RedisError, OSError):
                await self._follower.close()
        if self._writer is not None:
            await self._writer.flush()
        await self._close_redis()

    async def _close_redis(self) -> None:
        if self._own_redis and self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
            self._redis = None

    async def _bootstrap(self, follower: Follower) -> None:
        names, delay, cache_tried = self.settings.names, _RETRY_FIRST, False
        while True:
            try:
                await follower.bootstrap()
                self._source = "redis"
                return
            except ForeignLog as exc:
                raise BootstrapError(
                    f"namespace {names.namespace!r} holds another issuer's log ({exc}); "
                    "check KEYHERALD_ISSUER and KEYHERALD_NAMESPACE"
                ) from None
            except ProtocolError as exc:
                # Not signed by our control key, or not a snapshot at all: a wrong anchor, or
                # someone who can write Redis. The issuer's next append replaces it, so wait.
                self._why = (
                    f"the snapshot in Redis was refused ({exc.code}): it does not verify with the "
                    "trust anchor; check KEYHERALD_TRUST_ANCHOR, or whether someone else writes Redis"
                )
            except NoSnapshot as exc:
                self._why = f"{exc} (is the issuer running?)"
            except (RedisError, OSError) as exc:
                self._why = f"cannot reach Redis at KEYHERALD_REDIS_URL ({type(exc).__name__})"
            except Exception as exc:  # anything else read from Redis: retry, never a raw traceback
                log.warning("bootstrap attempt failed (%s); retrying", type(exc).__name__)
                self._why = f"reading the snapshot failed ({type(exc).__name__})"
            if not cache_tried:
                cache_tried = True
                if self._boot_from_cache(follower, self._why or ""):
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_CAP)

    def _boot_from_cache(self, follower: Follower, why: str) -> bool:
        path = self.settings.cache_path
        if path is None:
            return False
        try:
            load_into(self._signed, read_material(path))
        except CacheFileError as exc:
            self._cache_note = f"; cache file {path} refused: {exc}"
            log.error("cannot boot from the cache file %s: %s", path, exc)
            return False
        log.warning("booted from the cache file %s at seq %d: %s", path, self.keys.state.seq, why)
        follower.resume_from_memory()
        self._source = "cache"
        return True

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

    def status(self) -> AgentStatus:
        state, signed, follower = self.keys.state, self._signed, self._follower
        bootstrapped = self.keys.bootstrapped
        age = self._clock() - state.time if bootstrapped else None
        limit = self.settings.max_staleness
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
            stale=limit is not None and (age is None or age > limit),
            max_staleness=limit,
            keys=tuple(KeyStatus(k.kid, k.alg, str(k.state)) for k in state.keys_in(*KeyState)),
            revoked_tokens=len(state.revoked_tokens),
            revoked_subjects=len(state.revoked_subjects),
            refused_events=signed.refused_total,
            refused_by_reason=dict(signed.refused),
            resyncs=signed.resyncs,
            resets=signed.resets,
            disconnects=follower.disconnects if follower else 0,
            follow_failures=follower.failures if follower else 0,
            unknown_kid=counters.get("unknown_kids", 0),
            tokens=counters,
        )

    # -- in-memory feeding (keyherald.verifier.testing) ----------------------------------

    def _load_signed(self, snapshot: str, events: tuple[str, ...] = (), *, source: str = "memory") -> None:
        """Load signed material without Redis; every signature is checked as from Redis."""
        try:
            load_into(self._signed, Material(snapshot, events))
        except CacheFileError as exc:
            raise BootstrapError(str(exc)) from None
        self._source = source

    def _feed(self, event: str) -> None:
        self._signed.offer(event)

    def __repr__(self) -> str:
        return f"VerifierAgent(issuer={self.settings.issuer!r}, namespace={self.settings.namespace!r})"
