"""Which database a URL really reaches, so guards decide by what a
database *is*, never by what it is called.

A config may name one database twice (``live = "PROD_DATABASE_URL"``, prod's
URL spelled with ``localhost`` instead of ``127.0.0.1``, through a pooler, a
Unix socket or a DNS alias). Names and URL spellings cannot tell; the server
can. ``identify`` asks it, over a connection, for:

- the cluster's ``system_identifier`` (``pg_control_system()``, when the
  role may call it — PUBLIC may by default, some platforms revoke it);
- ``pg_postmaster_start_time()`` — which running server instance answered
  (any role may read it; two servers practically never start in the same
  microsecond, and unlike the system identifier it differs between a
  cluster and its physical copies: a replica, a restored base backup, a
  Neon branch, which are *other* databases for every guard here);
- ``current_database()`` and the database's OID (two databases of one
  server differ; a database dropped and re-created under the same name has
  a new OID).

Two identities are the same database when their URLs are the same after a
DNS-free normalisation (host lower-cased, loopback spellings and Unix
sockets as "local", default port, default database = user), or when the
server says so: same database name and OID, same server instance, and —
when both could read it — the same system identifier. ``inet_server_addr()``
/ port are kept for the description only: behind tunnels, proxies and
containers the address a server accepted on is neither unique nor stable.

``protected_aliases`` is the guard every destructive job calls at its
entry: of a set of configured names, which reach the same database as the
target. Names whose URL is not set in this process (a deployed function
gets only the URLs its job needs) cannot be compared and are listed as
such; a configured database that cannot be reached is reported as
*unknown*, and the callers treat unknown as "may be the same" — a guard
that cannot look refuses rather than hopes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

import psycopg

from .config import Settings
from .db import connect
from .errors import ConfigError, SafesyncError
from .log import redact

_FACTS = """
select current_database(), d.oid, pg_postmaster_start_time(), host(inet_server_addr()), inet_server_port(),
       has_function_privilege('pg_catalog.pg_control_system()', 'execute')
from pg_database d where d.datname = current_database()
"""
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "0:0:0:0:0:0:0:1", ""})
DEFAULT_PORT = "5432"


@dataclass(frozen=True)
class Identity:
    database: str
    database_oid: int
    started: datetime  # pg_postmaster_start_time(): the running server instance
    system_identifier: str | None
    server_address: str | None  # inet_server_addr() ("local" for loopback); None over a Unix socket
    server_port: int | None
    url_key: tuple[str, str, str]  # canonical (host, port, dbname) of the URL

    def same_database(self, other: "Identity") -> bool:
        if self.url_key == other.url_key:
            return True
        if (self.database, self.database_oid) != (other.database, other.database_oid):
            return False
        if self.system_identifier and other.system_identifier and self.system_identifier != other.system_identifier:
            return False
        return self.started == other.started

    def describe(self) -> str:
        where = f"{self.server_address}:{self.server_port}" if self.server_address else "a local socket"
        server = f"cluster {self.system_identifier}" if self.system_identifier else "a server"
        return f"database {self.database} (oid {self.database_oid}) of {server} started {self.started.isoformat()}, reached at {where}"

    def as_dict(self) -> dict:
        return {
            "database": self.database,
            "database_oid": self.database_oid,
            "system_identifier": self.system_identifier,
            "server_started": self.started.isoformat(),
            "server_address": self.server_address,
            "server_port": self.server_port,
        }


def _canonical_host(host: str) -> str:
    host = host.strip().lower().rstrip(".").strip("[]")
    if host in _LOOPBACK or host.startswith("127.") or host.startswith("/") or host.startswith("@"):
        return "local"  # loopback and Unix sockets: this machine
    return host


def url_key(url: str) -> tuple[str, str, str]:
    """(host, port, dbname) of a URL after DNS-free normalisation."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid database URL: {redact(str(exc)).strip()}") from None
    host = str(info.get("hostaddr") or info.get("host") or "")
    hosts = ",".join(_canonical_host(h) for h in host.split(","))
    port = str(info.get("port") or DEFAULT_PORT)
    dbname = str(info.get("dbname") or info.get("user") or "")
    return hosts, port, dbname


def identify(conn: psycopg.Connection, url: str) -> Identity:
    """The identity of the database ``conn`` (opened from ``url``) reaches.
    Read-only; in a transaction the system-identifier probe runs in a
    savepoint, so a platform that forbids it cannot abort the caller."""
    database, oid, started, address, port, may_read_control = conn.execute(_FACTS).fetchone()
    sysid = None
    if may_read_control:
        try:
            with conn.transaction():
                sysid = conn.execute("select system_identifier::text from pg_catalog.pg_control_system()").fetchone()[0]
        except psycopg.Error:
            sysid = None
    if address is not None and _canonical_host(address) == "local":
        address = "local"
    return Identity(database, oid, started, sysid, address, port, url_key(url))


def resolve(url: str) -> Identity:
    with connect(url, autocommit=True, application_name="safesync-identity", connect_timeout=10) as conn:
        return identify(conn, url)


@dataclass
class Aliases:
    """What ``protected_aliases`` found for one target."""

    target: str
    identity: Identity
    same: list[str] = field(default_factory=list)  # names that are the same database as the target
    unknown: dict[str, str] = field(default_factory=dict)  # name -> why it could not be compared (unreachable)
    not_configured: dict[str, str] = field(default_factory=dict)  # name -> env var not set in this process

    def as_dict(self) -> dict:
        return {
            "target": self.target,
            "identity": self.identity.as_dict(),
            "same_database_as": self.same,
            "could_not_compare": {**self.unknown, **self.not_configured},
        }


def protected_names(settings: Settings, *also: str | None) -> list[str]:
    """The configured names whose databases destructive jobs must not
    overwrite by accident: every database in ``backup.databases``, the
    content-sync target, ``prod``, and ``also`` (the job's own source)."""
    config = settings.config
    names = [*config.backup.databases, config.content_sync.target, "prod", *also]
    return [n for n in dict.fromkeys(names) if n and n in config.databases]


def protected_aliases(settings: Settings, target: str, names: Iterable[str]) -> Aliases:
    """Which of ``names`` reach the same database as ``target``. The
    target must resolve (DatabaseError / ConfigError otherwise); the others
    are compared when their URL is set and reachable."""
    target_url = settings.database_url(target)
    target_id = resolve(target_url)
    found = Aliases(target, target_id)
    for name in names:
        if name == target:
            continue
        var = settings.config.databases[name]
        if not settings.secret(var):
            found.not_configured[name] = f"{var} not set"
            continue
        url = settings.database_url(name)
        if url_key(url) == target_id.url_key:
            found.same.append(name)
            continue
        try:
            other = resolve(url)
        except SafesyncError as exc:
            found.unknown[name] = exc.message
            continue
        if other.same_database(target_id):
            found.same.append(name)
    return found
