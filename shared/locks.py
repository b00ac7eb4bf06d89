"""One run per job and target, and one run per delivery.

Both live in the target database, so every instance of every function (and
the CLI) agrees without extra infrastructure:

- a session-level advisory lock keyed by the job, taken in the target
  database (so it is the database's, whatever name a config gives it); a
  second concurrent run fails at once with AlreadyRunning (409);
- ``safesync.deliveries``: the answer of each delivery (``shared.delivery``:
  what the request's credential signed, scoped by target, caller and body),
  one row per signed identity and per job run, with the QStash message key
  beside it so that QStash's re-signed retries of one message find the first
  attempt's answer. A delivery already answered returns that answer instead
  of running again; one left ``running`` by a killed process is run again,
  which is safe because whoever holds the advisory lock is the only runner.

Installs from before keyed the table by the (unsigned) ``Upstash-Message-Id``
alone; ``SCHEMA_SQL`` migrates it in place (the old rows stay as history and
are never replayed: their keys cannot be scoped after the fact).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg.types.json import Jsonb

from .db import connect
from .delivery import Delivery
from .errors import AlreadyRunning, ConfigError

SCHEMA_SQL = """
create schema if not exists safesync;
create table if not exists safesync.deliveries (
    delivery_key text primary key,
    message_key  text,
    source       text not null,
    job          text not null,
    target       text not null,
    state        text not null check (state in ('running', 'done')),
    status       integer,
    result       jsonb,
    attempts     integer not null default 1,
    received_at  timestamptz not null default now(),
    finished_at  timestamptz
);
-- before: message_id (the unsigned Upstash-Message-Id) was the key; its rows stay as history
DO $deliveries$
BEGIN
  IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'safesync.deliveries'::regclass AND attname = 'message_id' AND NOT attisdropped) THEN
    ALTER TABLE safesync.deliveries RENAME COLUMN message_id TO delivery_key;
    ALTER TABLE safesync.deliveries ADD COLUMN message_key text, ADD COLUMN source text NOT NULL DEFAULT 'legacy';
    ALTER TABLE safesync.deliveries ALTER COLUMN source DROP DEFAULT;
  END IF;
END
$deliveries$;
create index if not exists deliveries_message_key on safesync.deliveries (message_key) where message_key is not null;
"""

_CURRENT_SHAPE = """
select exists (select from pg_attribute where attrelid = 'safesync.deliveries'::regclass and attname = 'message_key' and not attisdropped)
"""


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create (or migrate) the ``safesync`` bookkeeping schema.

    Serialised by a transaction-level advisory lock: concurrent
    ``create ... if not exists`` can still collide on the catalog.
    """
    if conn.execute("select to_regclass('safesync.deliveries') is not null").fetchone()[0] and conn.execute(_CURRENT_SHAPE).fetchone()[0]:
        # Already there (infra/roles.sql creates it): a least-privilege role may
        # not CREATE in the database, and CREATE SCHEMA IF NOT EXISTS checks
        # that privilege before it checks existence.
        return
    try:
        try:
            _create(conn)
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
            # A first content sync created schema safesync for its ledger (in
            # its own transaction, which the advisory lock does not cover) and
            # committed while we waited on it: the schema is there now.
            _create(conn)
    except psycopg.errors.InsufficientPrivilege:
        raise ConfigError(
            "safesync.deliveries needs creating or upgrading, and this role may not: "
            "run `safesync roles sql` as the database owner (see the README, Roles)"
        ) from None


def _create(conn: psycopg.Connection) -> None:
    """SCHEMA_SQL in one transaction, serialised against other runners."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtextextended('safesync:schema', 0))")
        conn.execute(SCHEMA_SQL)


def _lock_key(job: str) -> str:
    """The advisory lock's key: the job only. The lock is taken in the
    target database itself, so it is already that database's; keying it by
    the configured name too let two configs (two deployments) calling one
    database by different names both run the job on it at once — two
    migrations applying the same files, each restoring its own backup."""
    return f"safesync:{job}"


class JobLock:
    """An advisory lock held on a dedicated autocommit connection for the
    whole run (released when the connection closes, even on a crash)."""

    def __init__(self, url: str, job: str, target: str) -> None:
        self.url, self.job, self.target = url, job, target
        self.conn: psycopg.Connection | None = None

    def acquire(self) -> "JobLock":
        self.conn = connect(self.url, autocommit=True, application_name=f"safesync-lock-{self.job}")
        got = self.conn.execute(
            "select pg_try_advisory_lock(hashtextextended(%s, 0))", [_lock_key(self.job)]
        ).fetchone()[0]
        if not got:
            self.conn.close()
            self.conn = None
            raise AlreadyRunning(f"{self.job} is already running on {self.target}", {"job": self.job, "target": self.target})
        return self

    def release(self) -> None:
        """Unlock explicitly, then close: a closed connection's backend frees
        its locks only when it has exited, and a run that follows at once
        (the next step of a demo, a retry) must not find the lock still held."""
        if self.conn is None:
            return
        try:
            self.conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", [_lock_key(self.job)])
        except psycopg.Error:
            pass  # the connection is gone, and with it the lock
        finally:
            self.conn.close()
            self.conn = None


@contextmanager
def job_lock(url: str, job: str, target: str) -> Iterator[JobLock]:
    lock = JobLock(url, job, target).acquire()
    try:
        yield lock
    finally:
        lock.release()


def stored_delivery(conn: psycopg.Connection, delivery: Delivery, job: str, target: str) -> tuple[int, dict[str, Any]] | None:
    """The (status, result) of this delivery's final answer, found by its
    signed key or by its QStash message key (a retry, re-signed); else None.
    A retry found by its message key is recorded under its own key too, so
    its token replays the same answer whatever headers come with it.

    Only a final answer is replayed: a success, or a permanent failure. A
    retryable one (409, 5xx: storage or the database was down, the job failed
    and rolled back) is what QStash's retries and a re-sent Idempotency-Key
    are for; replaying it turned one outage into a day without a backup."""
    key, message = delivery.record_key(job, target), delivery.message_key(job, target)
    row = conn.execute(
        """
        select delivery_key, status, result from safesync.deliveries
        where state = 'done' and (delivery_key = %s or (%s::text is not null and message_key = %s))
          and (status < 400 or coalesce(result->>'_permanent', 'false') = 'true')
        order by delivery_key = %s desc, finished_at
        limit 1
        """,
        [key, message, message, key],
    ).fetchone()
    if row is None:
        return None
    found, status, result = row
    if found != key:
        conn.execute(
            """
            insert into safesync.deliveries (delivery_key, message_key, source, job, target, state, status, result, finished_at)
            values (%s, %s, %s, %s, %s, 'done', %s, %s, now())
            on conflict (delivery_key) do update set state = 'done', status = excluded.status, result = excluded.result,
                finished_at = excluded.finished_at, attempts = safesync.deliveries.attempts + 1
            """,
            [key, message, delivery.source, job, target, status, Jsonb(result)],
        )
    return status, result


def begin_delivery(conn: psycopg.Connection, delivery: Delivery, job: str, target: str) -> None:
    """Record that this delivery is being run (called while holding the job lock)."""
    conn.execute(
        """
        insert into safesync.deliveries (delivery_key, message_key, source, job, target, state) values (%s, %s, %s, %s, %s, 'running')
        on conflict (delivery_key) do update set state = 'running', attempts = safesync.deliveries.attempts + 1
        """,
        [delivery.record_key(job, target), delivery.message_key(job, target), delivery.source, job, target],
    )


def finish_delivery(conn: psycopg.Connection, delivery: Delivery, job: str, target: str, status: int, result: dict[str, Any]) -> None:
    conn.execute(
        "update safesync.deliveries set state = 'done', status = %s, result = %s, finished_at = now() where delivery_key = %s",
        [status, Jsonb(json.loads(json.dumps(result, default=str))), delivery.record_key(job, target)],
    )
