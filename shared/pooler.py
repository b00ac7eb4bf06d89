"""Whether a connection is a database session of its own, or a pooler's
(PgBouncer, Supavisor) transaction or statement slot.

Every job relies on its session: a session-level advisory lock (one run per
job and target) is held by the server connection that took it, an exported
snapshot lives as long as the exporting transaction's connection, settings
and prepared statements stay with the backend. Behind a pooler in
transaction or statement mode the client's next transaction may run on
another server connection — and another client's on ours, taking "our"
advisory lock again (it is re-entrant for the backend). Nothing fails: the
lock is silently not held.

The check asks the server, not the URL (a port number proves nothing): a
second client connection is opened while ours is idle. Two live sessions of
their own never share a backend pid; behind a transaction pooler the idle
server connection ours just released is handed to the second client
(PgBouncer reuses the most recently released one), or, if it got another,
ours comes back on a different backend. Either is proof. A URL found to be
a session of its own is remembered for the process: a pooler does not
appear in front of it later.
"""

from __future__ import annotations

from typing import Callable

import psycopg

from .errors import ConfigError

USE_INSTEAD = (
    "use the database's direct connection string (Supabase: db.<project>.supabase.co port 5432, not the pooler's port 6543; "
    "Neon: the host without '-pooler'); a session-mode pooler works only with safesync's settings set for the database "
    "(README: Connection poolers)"
)
_OWN_SESSIONS: set[str] = set()


def refused_options(message: str) -> ConfigError | None:
    """The refusal for a pooler that rejected the startup ``options``
    themselves (PgBouncer: "unsupported startup parameter: options"), or
    None for any other connection failure."""
    if "unsupported startup parameter" not in message:
        return None
    return ConfigError(
        "a connection pooler in front of the database refused safesync's session settings "
        f"(PgBouncer passes no startup 'options' parameter): {USE_INSTEAD}"
    )


def pooled_failure(exc: psycopg.Error) -> ConfigError | None:
    """The refusal for a pooler that refused a statement of ours because of
    its mode (PgBouncer statement mode: "transaction blocks not allowed in
    statement pooling mode"), or None for any other error."""
    if "pooling mode" not in str(exc) and "pool mode" not in str(exc):
        return None
    return ConfigError(f"a connection pooler in statement mode is in front of the database ({str(exc).strip()}): {USE_INSTEAD}")


def _backend(conn: psycopg.Connection) -> int:
    pid = conn.execute("select pg_catalog.pg_backend_pid()").fetchone()[0]
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    return pid


def require_own_session(url: str, conn: psycopg.Connection, open_probe: Callable[[], psycopg.Connection]) -> None:
    """Raise ``ConfigError`` when ``conn`` (connected to ``url``) turns out
    to be a pooled transaction slot rather than a session of its own.
    ``open_probe`` opens a second connection the same way."""
    if url in _OWN_SESSIONS:
        return
    ours = _backend(conn)
    with open_probe() as probe:
        other = _backend(probe)
        again = _backend(conn)
    if other == ours or again != ours:
        raise ConfigError(
            "the database connection is a pooler's transaction slot, not a session of its own (two client connections ran on "
            "one server backend): a connection pooler in transaction or statement mode, through which advisory locks, "
            f"snapshots and session settings are not kept; {USE_INSTEAD}"
        )
    _OWN_SESSIONS.add(url)

