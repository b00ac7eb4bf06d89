"""Jobs connected the way a hosted user connects: through a real PgBouncer
(``tests/pgbouncer.py``) in each pool mode. Each job either works correctly
(session mode: the session is ours) or refuses before writing anything,
naming the pooler and what to use instead — never a PgBouncer protocol error
raw, never an advisory lock that is silently not held."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg import sql

from safesync.functions import cli
from safesync.functions.content_sync import content_sync
from safesync.functions.content_sync.jobs import content_undo
from safesync.functions.backup import create_backup, restore_backup, verify_backup
from safesync.shared.db import REQUIRED_SETTINGS, connect, database_fingerprint
from safesync.shared.errors import AlreadyRunning, ConfigError
from safesync.shared.locks import job_lock
from tests.fixtures.lms import create_lms
from tests.pgbouncer import PgBouncer

BACKUP_TOML = """
[backup]
databases = ["prod"]
compress_level = 1
"""
USE_INSTEAD = "direct connection string"


def settings_as_database_defaults(url: str) -> None:
    """What a user does so that a pooler dropping the startup ``options``
    still hands safesync sessions with its settings: set them for the
    database (before the pooler opens its server connections)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name, value in REQUIRED_SETTINGS.items():
            conn.execute(sql.SQL("alter database {} set {} = {}").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(name), sql.Literal(value)))


@pytest.fixture
def prod(make_db) -> str:
    url = make_db()
    create_lms(url, variant="prod", scale=1)
    settings_as_database_defaults(url)
    return url


def run_cli(capsys, *argv: str) -> tuple[int, dict, str]:
    code = cli.main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def nothing_written(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("select to_regnamespace('safesync') is null").fetchone()[0]


@pytest.mark.parametrize("mode", ["session", "transaction", "statement"])
def test_a_pooler_rejecting_the_options_parameter_is_named_with_what_to_use(prod, write_settings, capsys, mode):
    """Before: "cannot connect to database: … FATAL: unsupported startup
    parameter: options" — true, and no word of a pooler or of what to use."""
    with PgBouncer(prod, mode) as bouncer:
        write_settings({"prod": bouncer.url(prod)}, BACKUP_TOML)
        code, body, err = run_cli(capsys, "backup", "create", "--db", "prod")
    assert code == 2 and "Traceback" not in err, (code, body, err)
    assert "connection pooler" in body["error"] and USE_INSTEAD in body["error"], body
    assert nothing_written(prod)


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_transaction_or_statement_pooler_is_refused_before_anything_is_written(prod, write_settings, capsys, mode):
    """Before: in statement mode a raw ProtocolViolation ("transaction blocks
    not allowed in statement pooling mode") escaped as a traceback; in
    transaction mode the job ran, its advisory lock taken on a server
    connection the next client could use."""
    with PgBouncer(prod, mode, ignore_options=True) as bouncer:
        write_settings({"prod": bouncer.url(prod)}, BACKUP_TOML)
        code, body, err = run_cli(capsys, "backup", "create", "--db", "prod")
    assert code == 2 and "Traceback" not in err, (code, body, err)
    assert "pooler" in body["error"] and USE_INSTEAD in body["error"], body
    assert nothing_written(prod)


def test_a_job_lock_through_a_transaction_pooler_is_refused_not_silently_shared(prod):
    """Before: two runs of one job both "held" its lock through PgBouncer in
    transaction mode: the second client ran on the server connection that
    took the lock, and a session's advisory lock is re-entrant."""
    with PgBouncer(prod, "transaction", ignore_options=True) as bouncer:
        url = bouncer.url(prod)
        with pytest.raises(ConfigError, match="transaction slot"):
            with job_lock(url, "backup", "prod"), job_lock(url, "backup", "prod"):
                pass


def test_through_a_session_pooler_the_jobs_work_and_the_lock_is_held(prod, make_db, write_settings):
    """Session mode (with the options dropped and the settings set for the
    database) is a session of our own: the lock excludes a second run, and a
    backup round trip is exact."""
    scratch = make_db()
    settings_as_database_defaults(scratch)
    with PgBouncer(prod, "session", ignore_options=True) as bouncer:
        url = bouncer.url(prod)
        with job_lock(url, "backup", "prod"):
            with pytest.raises(AlreadyRunning):
                with job_lock(url, "backup", "prod"):
                    pass
        settings = write_settings({"prod": url, "scratch": bouncer.url(scratch)}, BACKUP_TOML)
        info = create_backup(settings, "prod", "manual", trigger={"via": "test"})
        assert verify_backup(settings, info.id).ok
        restored = restore_backup(settings, info.id, "scratch")
        assert all(row["match"] for row in restored.tables)
    with connect(prod) as a, connect(scratch) as b:
        assert database_fingerprint(a) == database_fingerprint(b)


def test_an_undo_right_after_a_sync_through_a_session_pooler_is_not_refused_for_the_syncs_own_ledger_rows(lms):
    """Before: the undo was refused ("the undo changed protected object(s)
    safesync.content_ledger (rows written before the sync recorded anything
    (170 inserted))"): PgBouncer handed it the backend the sync had just
    used, whose per-transaction row counters still held the sync's ledger
    rows (PostgreSQL flushes them at most once a second); the protection
    proof's table also reported them as rows this run wrote."""
    make, dev, prod = lms
    for url in (dev, prod):
        settings_as_database_defaults(url)
    with PgBouncer(prod, "session", ignore_options=True) as bouncer:
        settings = make(urls={"dev": bouncer.url(dev), "prod": bouncer.url(prod)})
        synced = content_sync(settings, "sync", adopt=True)
        assert synced.status == 200, synced.body
        undone = content_undo(settings, synced.body["run_id"])
    assert undone.status == 200 and undone.body["status"] == "ok", undone.body
    proof = undone.body["tables"]["protection proof"]
    assert proof and all(r["inserted"] == r["updated"] == r["deleted"] == 0 for r in proof), proof
