"""Everything an issuer process holds, built from settings: the worker, each replica and
the ``keyherald`` command (which acts with the issuer's settings, no running issuer needed).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from keyherald.shared.clock import Clock, system_clock
from keyherald.shared.connect import close_client, open_client
from keyherald.shared.envelope import ControlKey
from keyherald.shared.errors import SettingsError
from keyherald.shared.events import Event
from keyherald.shared.jwk import SigningKey, VerifyingKey
from keyherald.shared.names import Names
from keyherald.shared.redisurl import Topology, parse_redis_url
from keyherald.shared.state import State

from .clients import RecordSeal
from .clocksync import RedisClock
from .controlfile import ControlKeyFile
from .durability import Durability
from .errors import NamespaceEmpty
from .eventlog import Draft, EventLog
from .eviction import check_eviction_policy
from .highwater import RecordFile, record_key, records_here
from .kek import KeyEncryptionKey
from .keystore import KeyStore
from .lifecycle import Policy
from .registry import ClientRegistry
from .settings import IssuerSettings

__all__ = ["FreshKeys", "IssuerContext", "connect_redis"]


async def connect_redis(url: str, *, max_connections: int = 64) -> Redis:
    """A client of the primary (any topology: see keyherald.shared.connect) that fails fast
    with a SettingsError naming KEYHERALD_REDIS_URL.

    The pool blocks (up to 5 s) for a free connection instead of failing a burst of
    requests outright, as redis-py's default pool does once it holds 100 connections.
    """
    client = await open_client(
        url, max_connections=max_connections, blocking_timeout=5, decode_responses=True,
        socket_connect_timeout=3, health_check_interval=15,
    )
    try:
        await client.ping()
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        await close_client(client)
        raise SettingsError("KEYHERALD_REDIS_URL", f"cannot reach Redis ({type(exc).__name__})") from None
    except RedisError as exc:
        await close_client(client)
        raise SettingsError("KEYHERALD_REDIS_URL", f"Redis refused us: {exc}") from None
    return client


class FreshKeys:
    """New signing keys, made on demand while a mutation decides, kept across its retries."""

    def __init__(self, settings: IssuerSettings) -> None:
        self._settings = settings
        self._made: list[SigningKey] = []
        self.used: list[SigningKey] = []

    def pop(self, index: int = 0) -> VerifyingKey:
        key = self._made.pop(0) if self._made else SigningKey.generate(
            self._settings.algorithm, rsa_bits=self._settings.rsa_bits
        )
        self.used.append(key)
        return key.public

    def reset(self) -> None:
        """Start a new attempt: keys made but not committed may serve it."""
        self._made.extend(self.used)
        self.used = []


_Decide = Callable[[State, float, FreshKeys], list[Draft]]


class IssuerContext:
    """Redis, the KEK, the key store, the control key and the log, from settings."""

    def __init__(
        self, settings: IssuerSettings, *, clock: Clock = system_clock, create: bool | None = None,
        check_clock: bool | None = None, allow_stale: bool = False,
    ) -> None:
        """``check_clock`` measures the clock against Redis' (and corrects it by the offset);
        by default only the system clock is (an injected clock is a test's, not the host's).
        ``allow_stale`` lets a writer with no record of the log build on one whose newest
        event is older than the freshness bound (an operator who knows it is current)."""
        self.settings = settings
        self._create = settings.auto_init if create is None else create
        self._allow_stale = allow_stale
        self._check_clock_at_open = clock is system_clock if check_clock is None else check_clock
        self.host_clock = clock
        self.redis_clock: RedisClock | None = (
            RedisClock(clock, max_skew=settings.max_clock_skew) if self._check_clock_at_open else None
        )
        self.clock: Clock = self.redis_clock if self.redis_clock is not None else clock
        self.names = Names(settings.namespace)
        self.policy = Policy(
            algorithm=settings.algorithm,
            rotation_period=settings.rotation_period,
            token_ttl=int(settings.token_ttl),
            heartbeat_interval=settings.heartbeat_interval,
        )
        self._redis: Redis | None = None
        self._log: EventLog | None = None
        self._keystore: KeyStore | None = None
        self._control: ControlKey | None = None
        self._client_seal: RecordSeal | None = None
        self._durability: Durability | None = None

    async def open(self, *, create: bool | None = None, sync: bool = True) -> Self:
        """Connect and load the control key; ``create=False`` (admin commands) refuses a
        namespace no issuer has started in, rather than minting a control key for a typo.
        ``sync`` reads the log at once, refusing a namespace we cannot verify or do not own
        (a replica passes False and reports the trouble on /healthz while it retries)."""
        kek = KeyEncryptionKey.from_settings(self.settings)  # before Redis: a missing KEK says so
        self._redis = await connect_redis(self.settings.redis_url)
        try:
            if self.redis_clock is not None:
                await self._check_clock(self.redis_clock)
            if self._create if create is None else create:  # about to prepare a namespace: Redis must keep it
                await check_eviction_policy(self._redis)
            self._keystore = KeyStore(self._redis, self.names, kek)
            self._durability = Durability(
                self._redis, self.names, min_replicas=self.settings.min_replicas, timeout=self.settings.replica_timeout,
                replicated_topology=parse_redis_url(self.settings.redis_url).topology is Topology.SENTINEL)
            self._client_seal = RecordSeal(kek.derive(f"keyherald/{self.names.namespace}/client-registry"))
            may_create = self._create if create is None else create
            before = self._ran_here_before(kek) if may_create else None
            try:
                self._control = await self._keystore.control_key(
                    create=may_create and before is None, alg=self.settings.control_key_alg,
                    file=ControlKeyFile(self.settings.control_key_file) if self.settings.control_key_file else None,
                )
            except NamespaceEmpty as exc:
                if before is None:
                    raise
                raise NamespaceEmpty(
                    f"{exc}. This host ran the namespace before (its record {before}): a new control key would be a"
                    " new trust anchor every agent refuses. To start over with one anyway, remove that record"
                ) from None
            self._log = EventLog(
                self._redis, self.names, self._control, self.settings.issuer,
                retain=self.settings.stream_retain, clock=self.clock,
                record=self._record_file(kek, self._control), allow_stale=self._allow_stale,
                heartbeat_interval=self.settings.heartbeat_interval, load_control=self._keystore.find_control,
            )
            self._log.signer.on_change.append(lambda key: self._rotated(kek, key))
            if sync:
                await self._log.sync()
        except BaseException:
            await self.close()
            raise
        return self

    def _ran_here_before(self, kek: KeyEncryptionKey) -> Path | None:
        """A record this host kept of the namespace under some control key (and this KEK):
        Redis lost a namespace that was in use, and a new control key (a new trust anchor
        every agent would refuse) is not the way back."""
        found = self._records_here(kek)
        return found[-1] if found else None

    def _records_here(self, kek: KeyEncryptionKey) -> list[Path]:
        """This namespace's records on this host that verify under this KEK, oldest first."""
        return records_here(self.settings.state_dir, self.names.namespace, record_key(kek.derive, self.names.namespace))

    def _record_file(self, kek: KeyEncryptionKey, control: ControlKey) -> RecordFile | None:
        """One record per namespace and control key. A host that was down while the anchor was
        rotated starts from the record it kept under the previous key (read, so checked)."""
        directory = self.settings.state_dir
        if directory is None:
            return None
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError("KEYHERALD_STATE_DIR", f"cannot create {directory} ({exc.strerror})") from None
        path = directory / f"{self.names.namespace}-{control.anchor.thumbprint[:16]}.json"
        if not path.exists():
            earlier = self._records_here(kek)
            if earlier:  # the anchor was rotated while this host was away: go on from its record
                with contextlib.suppress(OSError):
                    shutil.copyfile(earlier[-1], path)
        return RecordFile(path, record_key(kek.derive, self.names.namespace))

    def _rotated(self, kek: KeyEncryptionKey, key: ControlKey) -> None:
        """The log moved to a rotated control key: keep the record, and the key file, with it."""
        assert self._log is not None and self._keystore is not None
        record = self._record_file(kek, key)
        if record is not None:
            self._log.memory.rekey(record, self._log.state)
        if self.settings.control_key_file is not None:
            ControlKeyFile(self.settings.control_key_file).replace(self._keystore.sealed_control(key))
        self._control = key

    async def _check_clock(self, clock: RedisClock) -> None:
        await clock.measure(self.redis)
        skew = -clock.raw_offset
        if abs(skew) > self.settings.max_clock_skew:
            raise SettingsError(
                "KEYHERALD_MAX_CLOCK_SKEW",
                f"this host's clock is {skew:+.1f}s off the Redis server's; fix its time sync (NTP)",
            )

    async def close(self) -> None:
        if self._log is not None:
            self._log.write_record()
        if self._redis is not None:
            await close_client(self._redis)
            self._redis = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def redis(self) -> Redis:
        assert self._redis is not None, "IssuerContext is not open"
        return self._redis

    @property
    def log_ready(self) -> bool:
        return self._log is not None

    @property
    def log(self) -> EventLog:
        assert self._log is not None, "IssuerContext is not open"
        return self._log

    @property
    def keystore(self) -> KeyStore:
        assert self._keystore is not None, "IssuerContext is not open"
        return self._keystore

    @property
    def durability(self) -> Durability:
        """When a revocation may be reported done (enough replicas hold it)."""
        assert self._durability is not None, "IssuerContext is not open"
        return self._durability

    @property
    def client_seal(self) -> RecordSeal:
        assert self._client_seal is not None, "IssuerContext is not open"
        return self._client_seal

    def clients(self) -> ClientRegistry:
        """The client registry, its records sealed under a key derived from the KEK."""
        return ClientRegistry(self.redis, self.names, seal=self.client_seal, log=self.log, clock=self.clock)

    @property
    def control(self) -> ControlKey:
        """The control key: the log's (it moves with an anchor rotation) once open."""
        if self._log is not None:
            return self._log.control
        assert self._control is not None, "IssuerContext is not open"
        return self._control

    async def commit_with_keys(self, decide: _Decide) -> list[Event]:
        """Commit drafts that may need new signing keys; those are stored before announced."""
        fresh = FreshKeys(self.settings)

        async def mutation(state: State, now: float) -> Sequence[Draft]:
            fresh.reset()
            drafts = decide(state, now, fresh)
            for key in fresh.used:
                await self.keystore.put(key, made_at=now)
            return drafts

        return await self.log.commit(mutation)

