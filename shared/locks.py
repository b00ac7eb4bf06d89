"""One run per job and target, and one run per QStash message.

Both live in the target database, so every instance of every function (and
the CLI) agrees without extra infrastructure:

- a session-level advisory lock keyed by ``job:target``; a second concurrent
  run fails at once with AlreadyRunning (409);
- ``safesync.deliveries``: the result of each QStash message id. A
  redelivered message returns the first run's stored result instead of
  running again. A delivery left ``running`` by a killed process is retried,
  which is safe because whoever holds the advisory lock is the only runner.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg.types.json import Jsonb

from .db import connect
from .errors import AlreadyRunning

SCHEMA_SQL = """
create schema if not exists safesync;
create table if not exists safesync.deliveries (
    message_id   text primary key,
    job          text not null,
    target       text not null,
    state        text not null check (state in ('running', 'done')),
    status       integer,
    result       jsonb,
    attempts     integer not null default 1,
    received_at  timestamptz not null default now(),
    finished_at  timestamptz
);
"""


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the ``safesync`` bookkeeping schema if it is missing.

    Serialised by a transaction-level advisory lock: concurrent
    ``create ... if not exists`` can still collide on the catalog.
    """
    if conn.execute("select to_regclass('safesync.deliveries') is not null").fetchone()[0]:
        # Already there (infra/roles.sql creates it): a least-privilege role may
        # not CREATE in the database, and CREATE SCHEMA IF NOT EXISTS checks
        # that privilege before it checks existence.
        return
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtextextended('safesync:schema', 0))")
        conn.execute(SCHEMA_SQL)


def _lock_key(job: str, target: str) -> str:
    return f"safesync:{job}:{target}"


class JobLock:
    """An advisory lock held on a dedicated autocommit connection for the
    whole run (released when the connection closes, even on a crash)."""

    def __init__(self, url: str, job: str, target: str) -> None:
        self.url, self.job, self.target = url, job, target
        self.conn: psycopg.Connection | None = None

    def acquire(self) -> "JobLock":
        self.conn = connect(self.url, autocommit=True, application_name=f"safesync-lock-{self.job}")
        got = self.conn.execute(
            "select pg_try_advisory_lock(hashtextextended(%s, 0))", [_lock_key(self.job, self.target)]
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
            self.conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", [_lock_key(self.job, self.target)])
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


def stored_delivery(conn: psycopg.Connection, message_id: str) -> tuple[int, dict[str, Any]] | None:
    """The stored (status, result) of a finished delivery, else None."""
    row = conn.execute(
        "select status, result from safesync.deliveries where message_id = %s and state = 'done'", [message_id]
    ).fetchone()
    return (row[0], row[1]) if row else None


def begin_delivery(conn: psycopg.Connection, message_id: str, job: str, target: str) -> None:
    """Record that this message is being run (called while holding the job lock)."""
    conn.execute(
        """
        insert into safesync.deliveries (message_id, job, target, state) values (%s, %s, %s, 'running')
        on conflict (message_id) do update set state = 'running', attempts = safesync.deliveries.attempts + 1
        """,
        [message_id, job, target],
    )


def finish_delivery(conn: psycopg.Connection, message_id: str, status: int, result: dict[str, Any]) -> None:
    conn.execute(
        "update safesync.deliveries set state = 'done', status = %s, result = %s, finished_at = now() where message_id = %s",
        [status, Jsonb(json.loads(json.dumps(result, default=str))), message_id],
    )
