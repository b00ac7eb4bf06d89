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


def test_every_database_job_on_18(timed_out, write_settings, tmp_path) -> None:
    """Validate (one database, and two compared), a migration rehearsed on a
    scratch database and applied, a content sync and its undo, a restore —
    on PostgreSQL 18, whose catalogs moved (NOT NULL constraints are rows of
    pg_constraint since 18): a comparison reading them the old way would
    call two equal databases different, or different ones equal."""
    from safesync.functions import migrate
    from safesync.functions.backup.restore import restore_backup
    from safesync.functions.content_sync import content_undo
    from safesync.functions.validate import validate

    dev, prod, scratch, copy = timed_out("dev"), timed_out("prod"), timed_out(None), timed_out(None)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_badges.sql").write_text(
        "create table badges (id int generated always as identity primary key, code text not null unique);\n"
        "alter table users add column badge_id int references badges;\n"
    )
    settings = write_settings(
        {"dev": dev, "prod": prod, "scratch": scratch, "copy": copy},
        '[backup]\ndatabases = ["prod"]\n[migrate]\ndatabase = "prod"\nrehearse_on = "scratch"\nsql_dir = "migrations"\n'
        + lms_config_toml(),
    )
    checked = validate(settings, "prod")
    assert checked.exit_code == 0, checked.body["summary"]

    info = create_backup(settings, "prod", "manual")
    restored = restore_backup(settings, info.id, "copy")
    assert all(row["match"] for row in restored.tables), restored.tables
    same = validate(settings, "prod", "copy")
    assert same.exit_code == 0 and same.body["status"] == "ok", same.body["summary"]
    with psycopg.connect(copy, autocommit=True) as conn:  # a NOT NULL dropped: 18 keeps it in pg_constraint
        conn.execute("alter table users alter column email drop not null")
    differs = validate(settings, "prod", "copy")
    assert differs.status != 200 or differs.body["status"] != "ok", differs.body["summary"]
    assert "email" in str(differs.body), differs.body["summary"]

    rehearsed = migrate.rehearse(settings)
    assert rehearsed.exit_code == 0, rehearsed.body["summary"]
    applied = migrate.apply(settings)
    assert applied.exit_code == 0, applied.body["summary"]
    with psycopg.connect(prod) as conn:
        assert conn.execute("select count(*) from safesync.migrations").fetchone()[0] == 1

    synced = content_sync(settings, "sync", adopt=True)
    assert synced.exit_code == 0, synced.body["summary"]
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("update lessons set title = title || ' (v2)' where id in (select id from lessons order by id limit 3)")
    second = content_sync(settings, "sync")
    assert second.exit_code == 0 and "synced 3 row(s)" in second.body["summary"], second.body["summary"]
    undone = content_undo(settings, second.body["run_id"])
    assert undone.exit_code == 0, undone.body["summary"]
    with psycopg.connect(prod) as conn:
        assert conn.execute("select count(*) from lessons where title like '%(v2)'").fetchone()[0] == 0


def _owned_by_16s_role(pg_next, old: str) -> tuple[str, str]:
    """A new database on 18 owned by the role the 16 database's objects have
    (grants name it): (its URL as that role, its name)."""
    owner = psycopg.conninfo.conninfo_to_dict(old)["user"]
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_next.url(), autocommit=True) as admin:
        admin.execute(f"do $$ begin if not exists (select from pg_roles where rolname = '{owner}') then create role {owner} login; end if; end $$")
        admin.execute(sql.SQL("create database {} owner {}").format(sql.Identifier(name), sql.Identifier(owner)))
    return pg_next.url(name).replace(f"{pg_next.user}@", f"{owner}@"), name


def _drop(pg_next, name: str) -> None:
    with psycopg.connect(pg_next.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def test_the_same_schema_on_16_and_18_compares_identical(pg_next, make_db, pg_server, write_settings) -> None:
    """A staging or a restore on the next major (an upgrade rehearsed): 17
    reads an unset statistics target as NULL where 16 says -1 and gives
    every table owner MAINTAIN, and 18 keeps each NOT NULL as a row of
    pg_constraint (``users_email_not_null``) where 16 keeps a flag. Every
    column, table and NOT NULL was a difference between two equal databases
    (206 on the LMS fixture); a real one still shows."""
    from safesync.functions.validate import validate

    old = make_db()
    create_lms(old, variant="prod")
    new, name = _owned_by_16s_role(pg_next, old)
    try:
        create_lms(new, variant="prod")
        settings = write_settings({"old": old, "new": new}, "")
        answer = validate(settings, "old", "new")
        assert answer.body["status"] == "ok", (answer.body["summary"], answer.body.get("tables", {}).get("schema differences"))
        moved = {r["kind"].split()[0]: r for r in answer.body["tables"]["not compared"] if "major versions differ" in r["kind"]}
        assert set(moved) == {"NOT", "the"} and all(r["old"] == 0 and r["new"] > 0 for r in moved.values()), moved
        with psycopg.connect(new, autocommit=True) as conn:
            conn.execute("alter table users alter column email drop not null")
        differs = validate(settings, "old", "new").body["tables"]["schema differences"]
        assert [(d["object"], d.get("attribute")) for d in differs] == [("public.users.email", "not_null")], differs
    finally:
        _drop(pg_next, name)


def test_a_staging_clone_from_16_onto_18_is_proven_identical(timed_out, pg_next, make_db, write_settings) -> None:
    """Staging on the next major, cloned from dev on 16 (pg_dump and psql
    18): the proof compares across the majors as validate does."""
    dev = make_db()
    create_lms(dev, variant="dev")
    staging, name = _owned_by_16s_role(pg_next, dev)
    try:
        settings = write_settings({"dev": dev, "staging": staging}, '[staging_clone]\nsource = "dev"\ntarget = "staging"\n')
        answer = clone(settings)
        assert answer.exit_code == 0 and "identical" in answer.body["summary"], answer.body.get("summary") or answer.body
    finally:
        _drop(pg_next, name)


def test_content_sync_from_16_into_18_and_a_16_backup_restored_on_18(pg_next, timed_out, make_db, write_settings) -> None:
    """dev on a laptop's 16, prod on a hosted 18: the row hashes (computed in
    SQL on each side) must agree across the majors — equal tables compare
    identical, a change is found and synced, the proof holds. And dev's
    backup restores into a database of the next major (an upgrade)."""
    from safesync.functions.backup.restore import restore_backup

    dev = make_db()
    create_lms(dev, variant="prod")  # the same rows as prod: identical content
    prod, name = _owned_by_16s_role(pg_next, dev)
    copy, copy_name = _owned_by_16s_role(pg_next, dev)
    try:
        create_lms(prod, variant="prod")
        settings = write_settings({"dev": dev, "prod": prod, "copy": copy}, '[backup]\ndatabases = ["prod", "dev"]\n' + lms_config_toml())
        compared = content_sync(settings, "compare")
        assert compared.body["status"] == "ok" and "identical" in compared.body["summary"], compared.body["summary"]
        assert content_sync(settings, "sync", adopt=True).exit_code == 0
        with psycopg.connect(dev, autocommit=True) as conn:
            conn.execute("update lessons set title = title || ' (v2)', quiz = '{\"q\": [1.5, 2e10]}' where id in (select id from lessons order by id limit 4)")
        synced = content_sync(settings, "sync")
        assert synced.exit_code == 0 and "synced 4 row(s)" in synced.body["summary"], synced.body["summary"]
        assert "identical" in content_sync(settings, "compare").body["summary"]

        info = create_backup(settings, "dev", "manual")
        assert info.manifest["server_version_num"] // 10000 == 16
        restored = restore_backup(settings, info.id, "copy")
        assert all(row["match"] for row in restored.tables), restored.tables
    finally:
        _drop(pg_next, name)
        _drop(pg_next, copy_name)
