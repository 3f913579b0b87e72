"""One issuer replica at run time: its duty loop (lease, rotation, heartbeats), its signer,
and the HTTP server. The FastStream app in :mod:`.worker` starts and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from redis.exceptions import RedisError

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.errors import ProtocolError, SettingsError
from keyherald.shared.events import Event, EventType
from keyherald.shared.state import State

from .admin import Admin
from .context import IssuerContext
from .errors import IssuerError, LogRefused
from .eviction import check_eviction_policy
from .leader import LeaderLease
from .rotation import Rotator
from .settings import IssuerSettings, is_loopback_url
from .storeaudit import StoreAudit
from .tokens import TokenSigner

if TYPE_CHECKING:
    from keyherald.verifier.agent import VerifierAgent

    from .fleet import FleetView

__all__ = ["IssuerRuntime"]


log = logging.getLogger("keyherald.issuer")

UNHEALTHY_AFTER = 3
"""Consecutive failed duty ticks after which /healthz says 503."""
FLEET_EVERY = 5.0


STOP_GRACE = 5.0
"""How long stop() waits for its tasks to end once cancelled."""


class IssuerRuntime:
    """Everything one replica runs; ``role`` and ``redis_ok`` feed /healthz.

    ``duties=False`` (the extra workers of ``issuer run --workers N``, see :mod:`.workers`)
    serves without taking part in leader election: no lease, rotation, heartbeats, audit or
    checkpoints; it only follows the log, as the replica proper on its host does.
    ``worker`` is its number there (None when it serves alone); ``reuse_port`` shares the
    port with its siblings."""

    def __init__(
        self, settings: IssuerSettings, *, clock: Clock = system_clock, serve_http: bool = True,
        accept_stale_log: bool = False, duties: bool = True, worker: int | None = None, reuse_port: bool = False,
    ) -> None:
        """``accept_stale_log``: build on the log Redis holds even if its newest event is old and
        this host cannot tell it from a rolled-back copy (the operator's word, after an outage
        of every replica; see recovery.py)."""
        self.settings = settings
        self.duties = duties
        self.worker = worker
        self._reuse_port = reuse_port
        self.ctx = IssuerContext(settings, clock=clock, allow_stale=accept_stale_log)
        self.clock = self.ctx.clock
        """The host clock corrected to the Redis server's (iat, cut-offs: see clocksync)."""
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.signer = TokenSigner(self.ctx)
        self.admin = Admin(self.ctx, on_commit=self.signer.refresh)
        self.role: Literal["leader", "follower"] = "follower"
        self.redis_ok = False
        self.seq = 0
        self.problem: str | None = None
        """Why this replica cannot append (a refused log, a failing duty loop), for /healthz."""
        self.duty_failures = 0
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_again = False
        self._witness_due = False
        self.fleet: FleetView | None = None
        """The fleet as agents last reported it (refreshed every FLEET_EVERY s), for /metrics."""
        self._fleet_at = float("-inf")
        self._serve_http = serve_http
        self._tasks: list[asyncio.Task[None]] = []
        self._lease: LeaderLease | None = None
        self._rotator: Rotator | None = None
        self._store_audit: StoreAudit | None = None
        self.http_port: int | None = None
        self.closing: list[Callable[[], None]] = []
        """What the HTTP side holds outside the context (its own Redis connection), closed at stop."""
        self.agent: VerifierAgent | None = None
        """The issuer's own verifier agent (audience: the issuer): it checks admin API tokens."""

    @property
    def tick_interval(self) -> float:
        s = self.settings
        return max(0.05, min(1.0, s.heartbeat_interval / 2, s.lease_ttl / 3, s.rotation_period / 4))

    @property
    def healthy(self) -> bool:
        """Can this replica append? False after a few failed duty ticks, or a refused log."""
        return self.redis_ok and self.problem is None and self.duty_failures < UNHEALTHY_AFTER

    async def start(self) -> None:
        # Bind first: a taken port is a setting to fix, said before anything else happens.
        listener = self._bind() if self._serve_http else None
        try:
            await self.ctx.open(sync=False)
            await check_eviction_policy(self.ctx.redis)  # every replica: a policy changed since init
            self.redis_ok = True
            self._lease = LeaderLease(self.ctx.redis, self.ctx.names, self.replica_id, self.settings.lease_ttl)
            from .logmetrics import record_append

            self.ctx.log.on_append.append(record_append)
            self._rotator = Rotator(self.ctx)
            self._store_audit = StoreAudit(self.ctx)
            try:
                await self._duty_once()
                await self.signer.refresh()
            except LogRefused as exc:
                # Not fatal: another replica may repair Redis, or an operator accept the log.
                self.problem = str(exc)
                log.error("this replica will not append: %s (see `keyherald log status`)", exc)
        except BaseException:
            if listener is not None:
                listener.close()
            await self.ctx.close()
            raise
        self._tasks.append(asyncio.create_task(self._duty_loop(), name="keyherald-duty"))
        self._tasks.append(asyncio.create_task(self._admin_agent(), name="keyherald-admin-agent"))
        if listener is not None:
            self._tasks.append(asyncio.create_task(self._http(listener), name="keyherald-http"))

    def _bind(self) -> socket.socket:
        host, port = self.settings.http_host, self.settings.http_port
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            listener = socket.socket(family, kind, proto)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(address)
            listener.listen(2048)
        except OSError as exc:
            raise SettingsError(
                "KEYHERALD_HTTP_PORT", f"cannot listen on {host}:{port} ({exc.strerror or exc})"
            ) from None
        listener.setblocking(False)
        self.http_port = int(listener.getsockname()[1])
        if self.settings.issuer.startswith("http://") and not is_loopback_url(self.settings.issuer):
            log.warning(
                "KEYHERALD_ISSUER %s is plain http off this machine: client secrets and tokens would cross"
                " the network in the clear; serve the issuer behind TLS (https://)", self.settings.issuer,
            )
        return listener

    async def stop(self) -> None:
        refreshing = self._refreshing
        tasks = [*self._tasks, *([refreshing] if refreshing is not None else [])]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a task that swallowed its cancellation must not hold the process
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in pending:
                log.error("task %s did not stop within %.0f s of being cancelled", task.get_name(), STOP_GRACE)
        self._tasks.clear()
        agent, self.agent = self.agent, None
        if agent is not None:
            with contextlib.suppress(Exception):
                await agent.stop()
        if self._lease is not None and self.role == "leader":
            with contextlib.suppress(RedisError, OSError):
                await self._lease.release()
        self.role = "follower"
        for close in self.closing:
            with contextlib.suppress(Exception):
                close()
        self.closing.clear()
        await self.ctx.close()

    async def on_event(self) -> None:
        """A new entry in the log: pick up the active key at once."""
        await self.signer.refresh()

    async def _duty_once(self) -> None:
        assert self._lease is not None and self._rotator is not None
        clock = self.ctx.redis_clock
        if clock is not None:
            await clock.measure(self.ctx.redis)
        eventlog = self.ctx.log
        state = await eventlog.sync()  # follows, or repairs what Redis lost or holds wrongly
        if not self.duties:
            self.seq = state.seq
            self.problem = None
            await self._look_at_fleet(state)  # /metrics, whichever worker answers it
            return
        leading = await self._lease.hold()
        if leading != (self.role == "leader"):
            log.info("replica %s is now %s", self.replica_id, "leader" if leading else "follower")
        self.role = "leader" if leading else "follower"
        if eventlog.lost is not None:
            await eventlog.reassert()
        if leading:
            found = await eventlog.audit()
            if found is not None:
                log.warning("repaired what Redis held: %s", found)
            assert self._store_audit is not None
            await self._store_audit.run()
            if self._store_audit.keys_destroyed:
                self._rotator.recheck = True
            await self._rotator.tick()
            await eventlog.checkpoint()
        state = await eventlog.sync()
        self.seq = state.seq
        problems = self._store_audit.problems if leading and self._store_audit is not None else []
        self.problem = "; ".join(problems) or None
        await self._look_at_fleet(state)

    async def _look_at_fleet(self, state: State) -> None:
        """Refresh the fleet view for /metrics now and then (it reads every presence record)."""
        now = time.monotonic()
        if now - self._fleet_at < FLEET_EVERY:
            return
        self._fleet_at = now
        from .fleet import read_fleet

        self.fleet = await read_fleet(self.ctx.redis, self.ctx.names, state.position)

    async def _duty_loop(self) -> None:
        while True:
            _stop_if_cancelled()  # a cancel swallowed below (a library that catches it) ends the loop here
            await asyncio.sleep(self.tick_interval)
            try:
                await self._duty_once()
                await self.signer.refresh()
                if not self.redis_ok:
                    log.info("Redis is reachable again")
                if self.duty_failures >= UNHEALTHY_AFTER:
                    log.info("the duty cycle works again")
                self.redis_ok, self.duty_failures = True, 0
            except (RedisError, OSError) as exc:
                _stop_if_cancelled()  # redis-py may turn a cancellation mid-command into a connection error
                self.duty_failures += 1
                if self.redis_ok:
                    log.warning("Redis unreachable (%s); retrying", type(exc).__name__)
                self.redis_ok, self.role = False, "follower"
                await asyncio.sleep(min(5.0, 0.2 * 2**self.duty_failures))
            except (IssuerError, ProtocolError) as exc:
                _stop_if_cancelled()
                self.duty_failures += 1
                if isinstance(exc, LogRefused) or self.duty_failures >= UNHEALTHY_AFTER:
                    self.problem = str(exc)
                log.error("duty cycle failed: %s", exc)
                await asyncio.sleep(min(1.0, self.tick_interval * 2))
            except Exception as exc:  # a surprise must not end the duty loop: no heartbeats, no rotation
                _stop_if_cancelled()
                self.duty_failures += 1
                if self.duty_failures >= UNHEALTHY_AFTER:
                    self.problem = f"the duty cycle keeps failing ({type(exc).__name__})"
                log.error("duty cycle failed unexpectedly (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(min(1.0, self.tick_interval * 2))

    async def _admin_agent(self) -> None:
        """Start the agent that checks admin tokens; retried until the log has a snapshot."""
        from keyherald.verifier.agent import VerifierAgent
        from keyherald.verifier.errors import BootstrapError
        from keyherald.verifier.settings import VerifierSettings

        s = self.settings
        anchor = self.ctx.control.anchor
        assert anchor.key is not None
        settings = VerifierSettings(
            redis_url=s.redis_url, namespace=s.namespace, issuer=s.issuer, audience=s.issuer,
            trust_anchor=json.dumps(anchor.key.jwk), startup_timeout=5.0, leeway=5.0,
            max_staleness="auto", cache_path=None, presence=False,
        )
        while self.agent is None:
            agent = VerifierAgent(settings, clock=self.clock, client_name=f"keyherald-issuer:{s.namespace}")
            try:
                await agent.start()
            except (BootstrapError, RedisError, OSError) as exc:
                _stop_if_cancelled()
                log.warning("admin API waits for the verifier agent: %s", exc)
                await asyncio.sleep(1.0)
                continue
            agent._signed.listeners.append(self._event_applied)
            self.agent = agent

    def _event_applied(self, event: Event) -> None:
        """The admin agent applied an event of the log: pick up the active key at once (an
        emergency rotation reaches this replica's signer in milliseconds, not at the next
        duty tick), and, leading, witness an event another writer appended (see witness.py).
        Coalesced: one refresh in flight at a time."""
        if self.role == "leader" and event.type != EventType.HEARTBEAT and not self.ctx.log.appended_here(event):
            self._witness_due = True
        if self._refreshing is not None and not self._refreshing.done():
            self._refresh_again = True
            return
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            _stop_if_cancelled()
            self._refresh_again = False
            with contextlib.suppress(RedisError, OSError, IssuerError, ProtocolError):
                await self.on_event()
                if self._witness_due:
                    self._witness_due = False
                    await self._witness()
            if not self._refresh_again:
                return

    async def _witness(self) -> None:
        """A heartbeat right after someone else's event: the command that appended it waits
        for a later event built on it before it calls its change done."""

        async def heartbeat(state: State, now: float) -> list[tuple[str, dict[str, object]]]:
            active = state.active_key
            return [(str(EventType.HEARTBEAT), {"active_kid": active.kid if active else None})]

        await self.ctx.log.commit(heartbeat)

    async def _http(self, listener: socket.socket) -> None:
        # Imported here: FastAPI and uvicorn load only in a process that serves HTTP.
        from .http import create_app
        from .http.server import serve

        await serve(create_app(self), self.settings, listener)


def _stop_if_cancelled() -> None:
    """A loop that survives every error must not survive its own cancellation: redis-py may
    turn a cancel that lands mid-command into a connection error, and swallowing it would
    leave stop() waiting for ever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
