"""Settings a hosted database carries for its application, on real PostgreSQL.

Hosted users set ``statement_timeout`` / ``idle_in_transaction_session_timeout``
per database or role (ALTER DATABASE / ROLE … SET) to protect the app, and
turn on row-level security, sometimes FORCEd on the owner. None of that may
stop a job half-way, and none of it may make a job see fewer rows than there
are and call two databases identical (``shared.db.SESSION_OPTIONS``). When
the database does stop a run, the report carries its words (``shared.runner``,
``shared.pgerrors``), never "internal error".
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from safesync.functions.backup import run_create
from safesync.functions.content_sync import content_sync
from safesync.functions.staging_clone import clone
from safesync.functions.validate import validate
from safesync.shared.db import connect, database_fingerprint
from tests.fixtures.lms import lms_config_toml, lms_database

OWNER = "safesync_rls_owner"  # a non-superuser owning the tables, as on Neon
READER = "safesync_rls_reader"  # a role granted SELECT only


def _dbname(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def _alter_database(url: str, **settings: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(sql.SQL("alter database {} set {} = {}").format(sql.Identifier(_dbname(url)), sql.Identifier(name), sql.Literal(value)))


def _role(pg_server, name: str) -> None:
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_roles where rolname = %s", [name]).fetchone():
            conn.execute(sql.SQL("create role {} login").format(sql.Identifier(name)))


def test_application_settings_on_the_databases_stop_no_job(pg_server, make_db, write_settings):
    """Before: compare and sync failed (statement timeout), the clone and
    validate crashed with "internal error" (the clone after committing); with
    client_encoding LATIN1 every job failed on the first "€" it read."""
    dev = lms_database(pg_server, make_db, variant="dev")
    prod = lms_database(pg_server, make_db, variant="prod")
    staging = make_db()
    for url in (dev, prod):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table notes (id int primary key, body text)")
            conn.execute("insert into notes select g, md5(g::text) || ' ü € 日本 😀' from generate_series(1, 50000) g")
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("update notes set body = 'prod' where id % 100 = 0")
    for url in (dev, prod, staging):
        _alter_database(url, statement_timeout="1ms", idle_in_transaction_session_timeout="20ms", client_encoding="LATIN1")
    settings = write_settings(
        {"dev": dev, "prod": prod, "staging": staging},
        lms_config_toml().replace("tables = [", 'tables = ["notes", ')
        + '\n[staging_clone]\nsource = "dev"\ntarget = "staging"\nschemas = ["public"]\n',
    )

    compare = content_sync(settings, "compare")
    assert compare.body["status"] == "problems" and "notes: 500 row(s) differ" in compare.body["summary"], compare.body
    synced = content_sync(settings, "sync", adopt=True)
    assert synced.body["status"] == "ok", synced.body
    cloned = clone(settings)
    assert cloned.body["status"] == "ok" and cloned.body["details"]["identical"] is True, cloned.body
    checked = validate(settings, "staging", against="dev")
    assert checked.body["status"] == "ok", checked.body
    backup = run_create(settings, "prod", "manual", trigger={"via": "cli"})
    assert backup.body["status"] == "ok", backup.body
    with connect(prod) as p, connect(dev) as d:  # our pinned sessions: a plain one times out here
        assert database_fingerprint(p, ["public"])["public.notes"] == database_fingerprint(d, ["public"])["public.notes"]


def test_a_sync_with_triggers_and_foreign_keys_switched_off_is_refused(pg_server, make_db, write_settings):
    """session_replication_role = replica (a superuser's ALTER DATABASE …
    SET) silences FK checks and the target's triggers: before, the sync
    wrote without them and its proof passed."""
    dev = lms_database(pg_server, make_db, variant="dev")
    prod = lms_database(pg_server, make_db, variant="prod")
    _alter_database(prod, session_replication_role="replica")
    with connect(prod) as conn:
        before = database_fingerprint(conn)
    answer = content_sync(write_settings({"dev": dev, "prod": prod}, lms_config_toml()), "sync", adopt=True)
    assert answer.status == 422 and "session_replication_role is replica" in answer.body["summary"], answer.body
    with connect(prod) as conn:
        assert database_fingerprint(conn) == before


@pytest.fixture
def forced_rls(pg_server, make_db, write_settings):
    """dev and prod where the owner (not a superuser) is subject to a FORCEd
    policy that hides lessons 50+, and prod's lesson 80 differs."""
    _role(pg_server, OWNER)
    _role(pg_server, READER)
    urls = {}
    for name in ("dev", "prod"):
        url = make_db()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("create schema app authorization {}").format(sql.Identifier(OWNER)))
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(OWNER)))
            conn.execute("create table app.lessons (id int primary key, title text)")
            conn.execute("create table app.users (id int primary key, email text)")
            conn.execute("insert into app.lessons select g, 'lesson ' || g from generate_series(1, 100) g")
            conn.execute("insert into app.users values (1, 'ada@example.com')")
            conn.execute("alter table app.lessons enable row level security")
            conn.execute("alter table app.lessons force row level security")
            conn.execute("create policy published on app.lessons using (id < 50)")
            conn.execute(sql.SQL("grant usage on schema app to {}").format(sql.Identifier(READER)))
            conn.execute(sql.SQL("grant select on all tables in schema app to {}").format(sql.Identifier(READER)))
            conn.execute("reset role")
            if name == "prod":
                conn.execute("update app.lessons set title = 'edited in prod' where id = 80")
        urls[name] = url
    return urls


def _as(pg_server, urls: dict[str, str], role: str) -> dict[str, str]:
    return {name: pg_server.url(_dbname(url), user=role, password=None) for name, url in urls.items()}


def test_a_policy_hiding_rows_is_refused_not_compared_as_identical(pg_server, write_settings, forced_rls):
    """Before: compare said "all 1 content tables identical" (row 80 was
    hidden from both sides), validate --against "identical"."""
    config = '[content_sync]\nsource = "dev"\ntarget = "prod"\ntables = ["app.lessons"]\nprotected = ["app.users"]\n'
    settings = write_settings(_as(pg_server, forced_rls, OWNER), config)
    for mode in ("compare", "sync"):
        answer = content_sync(settings, mode, adopt=True)
        assert answer.status == 422 and answer.body["report"]["status"] == "refused", answer.body
        assert 'row-level security policy for table "lessons"' in answer.body["error"] and "\n" not in answer.body["error"]
    with psycopg.connect(forced_rls["prod"]) as conn:
        assert conn.execute("select title from app.lessons where id = 80").fetchone()[0] == "edited in prod"

    readers = write_settings(_as(pg_server, forced_rls, READER), '[validate]\nschemas = ["app"]\n')
    for db, against in (("prod", "dev"), ("prod", None)):
        answer = validate(readers, db, against=against)
        assert answer.status == 422 and answer.body["report"]["status"] == "refused", answer.body
        assert "the role lacks a privilege" in answer.body["error"] and 'policy for table "lessons"' in answer.body["error"]


def test_a_clone_whose_proof_the_database_stops_says_it_committed(pg_server, make_db, write_settings):
    """The swap committed, then the comparison's source session was killed:
    the run fails (not "internal error"), saying staging was replaced but is
    not proven identical."""
    dev = lms_database(pg_server, make_db, variant="dev")
    staging = make_db()
    settings = write_settings({"dev": dev, "staging": staging}, '[staging_clone]\nsource = "dev"\ntarget = "staging"\nschemas = ["public"]\n')

    def kill_the_source_session(**event) -> None:
        if event.get("phase") == "comparing source and target":
            with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
                admin.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'safesync-clone-source'")

    answer = clone(settings, progress=kill_the_source_session)
    assert answer.status == 503 and answer.body["report"]["status"] == "failed", answer.body
    assert answer.body["error"].startswith("clone committed, but comparing it with the source failed, so it is not proven identical")
    assert answer.body["report"]["details"]["safety_backup"]["id"].startswith("staging-")
    with psycopg.connect(staging) as conn:
        assert conn.execute("select count(*) from lessons").fetchone()[0] > 0  # the swap did commit


def test_a_urls_own_options_are_kept_beside_ours_in_sessions_and_client_programs(make_db):
    """A URL may carry startup options (``?options=-c search_path=app``, as
    an application sets its schema; Neon's ``endpoint=…``). Ours replaced
    them in safesync's own sessions, and theirs replaced ours in psql's and
    pg_restore's (a conninfo's options win over PGOPTIONS): either the
    application's search_path was gone, or row_security was back on. Both
    now apply, ours winning where both name a setting."""
    import subprocess

    from safesync.shared.pgtools import find_tool, libpq_target

    url = make_db()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create schema app")
    options = psycopg.conninfo.conninfo_to_dict(url) | {"options": "-c search_path=app -c row_security=on"}
    theirs = psycopg.conninfo.make_conninfo(**options)
    show = "select current_setting('search_path'), current_setting('row_security'), current_setting('jit')"
    with connect(theirs) as conn:
        assert conn.execute(show).fetchone() == ("app", "off", "off")
    conninfo, env = libpq_target(theirs)
    done = subprocess.run([str(find_tool("psql").path), "-XAtF,", "-c", show, conninfo], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "app,off,off", done.stderr
