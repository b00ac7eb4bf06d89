"""The jobs on PostgreSQL 18 (``tests/pg_next.py``), where 17's
``transaction_timeout`` exists: a platform or DBA may set it for a role or
database (``ALTER ROLE app SET transaction_timeout = '30s'``, as
``statement_timeout`` is set on hosted PostgreSQL), and the server then
ends the session of any transaction older than that — a sync's write
transaction, the backup's exporting one, a clone's. Our sessions turn it
off on 17+ as they turn off the other timeouts."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from psycopg import sql

from safesync.functions.backup import create_backup, verify_backup
from safesync.functions.content_sync import content_sync
from safesync.functions.staging_clone import clone
from safesync.shared.db import connect
from tests.fixtures.lms import create_lms, lms_config_toml

pytestmark = pytest.mark.xdist_group("pg_next")  # one worker starts the cluster

TIMEOUT = "1s"


@pytest.fixture
def timed_out(pg_next, monkeypatch):
    """Factory: a new database on the 18 server with transaction_timeout = 1 s."""
    from tests import pg_next as module

    monkeypatch.setenv("PG_BIN", str(module.bin_dir()))  # pg_dump and pg_restore 18 for the 18 server
    made: list[str] = []

    def make(variant: str | None, timeout: str = TIMEOUT) -> str:
        name = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_next.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("alter database {} set transaction_timeout = {}").format(sql.Identifier(name), sql.Literal(timeout)))
        made.append(name)
        url = pg_next.url(name)
        if variant is not None:
            create_lms(url, variant=variant)
        return url

    yield make
    with psycopg.connect(pg_next.url(), autocommit=True) as admin:
        for name in made:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def test_the_timeout_is_real_and_our_sessions_turn_it_off(timed_out) -> None:
    url = timed_out("prod")
    with psycopg.connect(url) as plain:  # the database's setting, as the application gets it
        assert plain.execute("show transaction_timeout").fetchone()[0] == TIMEOUT
        with pytest.raises(psycopg.errors.TransactionTimeout, match="transaction timeout"):
            plain.execute("select pg_sleep(1.5)")
            plain.execute("select 1")
    with connect(url) as ours:
        assert ours.execute("show transaction_timeout").fetchone()[0] == "0"
        ours.execute("select pg_sleep(1.5)")  # one transaction, longer than the timeout
        assert ours.execute("select 1").fetchone()[0] == 1


def test_a_sync_whose_transaction_outlives_the_timeout_commits(timed_out, write_settings) -> None:
    """The write transaction of a sync lasts as long as the compare, the
    writes and the presync backup it waits for: past the timeout the server
    ended the session mid-sync ("terminating connection due to transaction
    timeout"), and a big sync could never commit."""
    dev, prod = timed_out("dev"), timed_out("prod")
    settings = write_settings({"dev": dev, "prod": prod}, '[backup]\ndatabases = ["prod"]\n' + lms_config_toml())

    def slow(step: str, conn) -> None:
        if step == "after_write":
            time.sleep(1.5)

    answer = content_sync(settings, "sync", adopt=True, hook=slow)
    assert answer.exit_code == 0 and answer.body["status"] == "ok", answer.body
    assert answer.body["details"]["safety_backup"]["kind"] == "presync"
    assert content_sync(settings, "compare").body["status"] == "ok"


def test_backup_create_and_restore_drill_on_18(timed_out, write_settings) -> None:
    """pg_dump 18 (the server's own), its manifest and a restore drill into a
    scratch database of that server, with the timeout set where it runs."""
    prod = timed_out("prod")
    settings = write_settings({"prod": prod}, '[backup]\ndatabases = ["prod"]\n')
    info = create_backup(settings, "prod", "manual")
    assert info.manifest["server_version_num"] >= 180000 and info.manifest["pg_dump_version"].startswith("18.")
    result = verify_backup(settings, info.id, restore_drill_too=True)
    assert result.ok and result.drill and result.drill["ok"], result


def test_a_staging_clone_whose_swap_outlives_the_timeout_commits_and_is_proven(timed_out, write_settings) -> None:
    """The clone's swap is one transaction run by psql (DDL, data, the
    masks, COMMIT): on a staging database whose timeout is shorter than
    the swap, the server ended psql's session and the clone failed."""
    dev, staging = timed_out("dev"), timed_out(None, "100ms")
    settings = write_settings({"dev": dev, "staging": staging}, '[staging_clone]\nsource = "dev"\ntarget = "staging"\n')
    answer = clone(settings)
    assert answer.exit_code == 0 and answer.body["status"] == "ok", answer.body
    assert "identical" in answer.body["summary"], answer.body["summary"]
