"""Where Redis is: the URL forms keyherald accepts, parsed once, for every topology.

- ``redis://[[user]:password@]host:port[/db]`` (``rediss://`` for TLS, ``unix://`` a socket):
  one server, or any node of a cluster (the server says so; see :mod:`.connect`).
- ``redis://[[user]:password@]h1:p1,h2:p2[/db]``: several equivalent servers (read replicas
  named by hand); each agent picks one, and keeps it.
- ``redis+sentinel://[[user]:password@]h1:26379,h2:26379/SERVICE[/DB]``: the primary (or a
  replica) of SERVICE, as Sentinel names it (``rediss+sentinel://``: TLS to the servers).
- ``redis+cluster://[[user]:password@]h1:p1,h2:p2``: a Redis Cluster, from these seed nodes.

Query options, in every form: redis-py's ``protocol``, ``client_name``, ``socket_timeout``,
``socket_connect_timeout``, ``health_check_interval``; for TLS ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs`` (``required``/``optional``/``none``), ``ssl_check_hostname``; and for
Sentinel ``sentinel_username``, ``sentinel_password``, ``sentinel_ssl``. The password in the URL
is the data servers' (the ACL user's); sentinels are asked with their own, if any.

Errors name the setting and the problem, never the URL (it may hold a password).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import SettingsError

__all__ = ["REPLICAS", "RedisTarget", "Topology", "parse_redis_url", "pick"]

REPLICAS = "replicas"
"""``KEYHERALD_REDIS_READ_URL=replicas``: read from the replicas of KEYHERALD_REDIS_URL's
topology (Sentinel's, or the cluster's)."""

_SINGLE = {"redis": False, "rediss": True, "valkey": False, "valkeys": True}
_SENTINEL = {"redis+sentinel": False, "rediss+sentinel": True, "valkey+sentinel": False}
_CLUSTER = {"redis+cluster": False, "rediss+cluster": True, "valkey+cluster": False}
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password", "sentinel_ssl")
_PASSED = {"protocol": int, "client_name": str, "socket_timeout": float, "socket_connect_timeout": float,
           "health_check_interval": int}
"""redis-py's own URL options, passed on as it would read them."""
_KNOWN = frozenset(_TLS_OPTIONS + _SENTINEL_OPTIONS + ("db", "ssl", *_PASSED))


class Topology(Enum):
    SINGLE = "single"
    """One server (or several equivalent ones, of which a client uses one); maybe a cluster node."""
    SENTINEL = "sentinel"
    CLUSTER = "cluster"
    UNIX = "unix"


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL. ``repr`` hides the password; ``url`` is the original, for redis-py."""

    topology: Topology
    url: str = field(repr=False)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = ()
    sentinel_options: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    extra: tuple[tuple[str, object], ...] = ()

    @property
    def redacted(self) -> str:
        """The URL as it may be logged: no password."""
        auth = f"{self.username or ''}:***@" if self.password else (f"{self.username}@" if self.username else "")
        where = ",".join(f"{h}:{p}" for h, p in self.hosts)
        tail = f"/{self.service}/{self.db}" if self.topology is Topology.SENTINEL else f"/{self.db}"
        return f"{self.topology.value}://{auth}{where}{tail}"

    def connection_options(self) -> dict[str, object]:
        """Keyword arguments of a redis-py connection to one data server of this target."""
        options: dict[str, object] = {"db": self.db, **dict(self.extra)}
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        if self.tls:
            options["ssl"] = True
            for key, value in self.tls_options:
                options[key] = value.lower() in {"1", "true", "yes"} if key == "ssl_check_hostname" else value
        return options

    def sentinel_connection_options(self) -> dict[str, object]:
        found = dict(self.sentinel_options)
        options: dict[str, object] = {}
        if "sentinel_username" in found:
            options["username"] = found["sentinel_username"]
        if "sentinel_password" in found:
            options["password"] = found["sentinel_password"]
        if found.get("sentinel_ssl", "").lower() in {"1", "true", "yes"}:
            options["ssl"] = True
            options.update({k: v for k, v in self.tls_options if k != "ssl_check_hostname"})
        return options


def _hosts(netloc: str, setting: str, default_port: int) -> tuple[tuple[str, int], ...]:
    found = []
    for part in netloc.split(","):
        part = part.strip()
        if not part:
            raise SettingsError(setting, "names an empty host")
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise SettingsError(setting, "has a port that is not a number") from None
        if not host or not 0 < port < 65536:
            raise SettingsError(setting, "names a host without a name, or a port out of range")
        found.append((host, port))
    return tuple(found)


def _int(text: str, setting: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(setting, f"has a {what} that is not a number") from None
    if value < 0:
        raise SettingsError(setting, f"has a negative {what}")
    return value


def parse_redis_url(url: str, *, setting: str = "KEYHERALD_REDIS_URL") -> RedisTarget:
    """Parse one of the forms above; SettingsError (naming ``setting``, not the URL) if not one."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise SettingsError(setting, "is not a URL (redis://, rediss://, redis+sentinel://, redis+cluster://, unix://)")
    if scheme == "unix":
        return RedisTarget(Topology.UNIX, text)
    if scheme in _SINGLE:
        topology, tls = Topology.SINGLE, _SINGLE[scheme]
    elif scheme in _SENTINEL:
        topology, tls = Topology.SENTINEL, _SENTINEL[scheme]
    elif scheme in _CLUSTER:
        topology, tls = Topology.CLUSTER, _CLUSTER[scheme]
    else:
        raise SettingsError(setting, "has an unknown scheme; use redis://, rediss://, redis+sentinel://,"
                                     " redis+cluster:// or unix://")
    # urlsplit refuses several hosts in a netloc with ports; split the authority by hand.
    authority, _, path_query = rest.partition("/")
    if "?" in authority:
        authority, _, query_only = authority.partition("?")
        path_query = "?" + query_only
    userinfo, at, netloc = authority.rpartition("@")
    if not at:
        userinfo, netloc = "", authority
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon and user:  # redis://secret@host: redis-py reads it as a password
            username, password = None, unquote(user)
    split = urlsplit("x:///" + path_query)
    path = [unquote(p) for p in split.path.strip("/").split("/") if p]
    query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
    unknown = set(query) - _KNOWN
    if unknown:
        raise SettingsError(setting, f"has unknown option(s): {', '.join(sorted(unknown))}")
    if query.get("ssl", "").lower() in {"1", "true", "yes"}:
        tls = True
    default_port = 26379 if topology is Topology.SENTINEL else 6379
    hosts = _hosts(netloc, setting, default_port)
    service, db = "", 0
    if topology is Topology.SENTINEL:
        if not path:
            raise SettingsError(setting, "names no service: redis+sentinel://h1:26379,h2:26379/SERVICE[/DB]")
        if len(path) > 2:
            raise SettingsError(setting, "has a path beyond /SERVICE/DB")
        service = path[0]
        db = _int(path[1], setting, "database") if len(path) == 2 else 0
    elif path:
        if len(path) > 1:
            raise SettingsError(setting, "has a path beyond /DB")
        db = _int(path[0], setting, "database")
    if "db" in query:
        db = _int(query["db"], setting, "database")
    if topology is Topology.CLUSTER and db != 0:
        raise SettingsError(setting, "names a database other than 0: a cluster has only database 0")
    tls_options = tuple((k, query[k]) for k in _TLS_OPTIONS if k in query)
    sentinel_options = tuple((k, query[k]) for k in _SENTINEL_OPTIONS if k in query)
    if sentinel_options and topology is not Topology.SENTINEL:
        raise SettingsError(setting, "has sentinel_* options but is not a redis+sentinel:// URL")
    extra = []
    for name, kind in _PASSED.items():
        if name in query:
            try:
                extra.append((name, kind(query[name])))
            except ValueError:
                raise SettingsError(setting, f"has a {name} option that is not a {kind.__name__}") from None
    return RedisTarget(topology, text, hosts, service, db, username, password, tls, tls_options, sentinel_options,
                       tuple(extra))


def pick(count: int, seed: str) -> int:
    """An index in ``range(count)`` that depends only on ``seed``: each agent (seeded with its
    id) keeps to one server across reconnects, and a fleet spreads evenly over them."""
    if count <= 1:
        return 0
    return int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(), "big") % count
