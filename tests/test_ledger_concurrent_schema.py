"""A first sync creates schema ``safesync`` for its ledger while another
request's runner may be creating the same schema for its delivery log
(``shared.locks.ensure_schema``), committing after the sync's REPEATABLE
READ snapshot was taken — or the other way round. Neither the ledger's
creation nor the watch over it may take that for a change, and neither
creator may fail on the other: found by the concurrent-triggers check,
which saw "the ledger was dropped" refuse a clean first sync."""

from __future__ import annotations

import threading
import time

import psycopg

from safesync.functions.content_sync import ledger
from safesync.functions.content_sync.ledger_watch import LedgerWatch
from safesync.shared.locks import SCHEMA_SQL, ensure_schema


def _sync_transaction(url: str) -> psycopg.Connection:
    """A target connection as the sync opens it, its snapshot already taken."""
    conn = psycopg.connect(url)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.execute("select 1")
    return conn


def _watched_ensure(conn: psycopg.Connection) -> list[str]:
    """The sync's own ledger steps under the watch, recording nothing: what the proof would be told."""
    watch = LedgerWatch.before_ensure(conn)
    ledger.ensure(conn)
    watch.after_ensure(conn)
    watch.before_record(conn)
    watch.after_record(conn)
    return watch.changes(conn)


def test_a_schema_committed_after_the_snapshot_is_not_a_dropped_ledger(make_db):
    url = make_db()
    with _sync_transaction(url) as conn:
        with psycopg.connect(url, autocommit=True) as runner:
            runner.execute(SCHEMA_SQL)  # another request's delivery log, committed after the snapshot
        assert _watched_ensure(conn) == []
        conn.commit()
    with psycopg.connect(url) as check:
        assert check.execute("select to_regclass('safesync.content_ledger') is not null").fetchone()[0]


def test_a_schema_being_created_by_another_transaction_is_waited_for_not_failed_on(make_db):
    url = make_db()
    with psycopg.connect(url) as runner, _sync_transaction(url) as conn:
        runner.execute("create schema safesync")  # not committed yet: the sync's create blocks on it
        committer = threading.Timer(0.3, runner.commit)
        committer.start()
        started = time.monotonic()
        try:
            changes = _watched_ensure(conn)
        finally:
            committer.join()
        assert time.monotonic() - started >= 0.25  # it did wait for the other creator
        assert changes == []
        conn.commit()
    with psycopg.connect(url) as check:
        assert check.execute("select to_regclass('safesync.content_ledger') is not null").fetchone()[0]


def test_the_delivery_log_waits_for_a_first_sync_that_is_creating_the_schema(make_db):
    url = make_db()
    failures: list[BaseException] = []

    def runner() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as meta:
                ensure_schema(meta)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            failures.append(exc)

    with _sync_transaction(url) as conn:
        assert _watched_ensure(conn) == []  # schema safesync created, not committed
        thread = threading.Thread(target=runner)
        thread.start()
        time.sleep(0.3)  # the runner's CREATE SCHEMA now waits on the sync's
        conn.commit()
        thread.join(30)
    assert not thread.is_alive() and failures == []
    with psycopg.connect(url) as check:
        assert check.execute("select to_regclass('safesync.deliveries') is not null").fetchone()[0]
