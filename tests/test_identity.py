"""Guards by identity: one database reached under other names and URL
spellings is still that database — for backup restore, staging clone,
content sync, migrate rehearsals and doctor."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg import sql

from safesync.functions import cli
from safesync.functions.backup import create_backup
from safesync.functions.content_sync import content_sync
from safesync.functions.staging_clone import clone
from safesync.shared.db import database_fingerprint
from safesync.shared.identity import resolve, url_key
from safesync.shared.preflight import FAIL, WARN, run_all
from tests import sentinels

SCHEMA = """
create table courses (id int primary key, title text);
create table users (id int primary key, email text);
insert into courses values (1, 'intro');
insert into users select g, 'user' || g || '@example.com' from generate_series(1, 5) g;
"""
CONTENT = """
[content_sync]
source = "dev"
target = "prod"
tables = ["courses"]
protected = ["users"]
"""


def spellings(pg_server, url: str) -> dict[str, str]:
    """Other ways to write a URL to the same database."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    host, port, db = info["host"], info["port"], info["dbname"]
    out = {
        "localhost": url.replace(f"@{host}:", "@localhost:"),
        "postgres:// scheme": url.replace("postgresql://", "postgres://", 1),
        "key=value": f"host=LocalHost port={port} dbname={db} user={info['user']} password={info['password']}",
        "extra parameters": url + "?application_name=other&connect_timeout=7",
    }
    if pg_server.embedded is not None:  # the embedded server also listens on a socket in its data directory
        out["unix socket"] = f"host={pg_server.embedded.data_dir} port={port} dbname={db} user={info['user']} password={info['password']}"
    return out


def fingerprint(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return database_fingerprint(conn)


@pytest.fixture
def prod(make_db):
    url = make_db()
    with psycopg.connect(url) as conn:
        conn.execute(SCHEMA)
    return url


@pytest.fixture
def unprivileged(pg_server, prod):
    """prod reached by a role that may not read pg_control_system() in it:
    identity then rests on the server instance and the database OID."""
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("revoke execute on function pg_control_system() from public")
        create = sql.SQL("create role identity_reader login password {}").format(sql.Literal(sentinels.DB_PASSWORD)).as_string(conn)
        conn.execute(f"do $$ begin {create}; exception when duplicate_object then null; end $$")  # roles are cluster-wide
        conn.execute(sql.SQL("grant connect on database {} to identity_reader").format(sql.Identifier(dbname)))
    return pg_server.url(dbname, user="identity_reader")


def test_every_spelling_of_one_database_is_the_same_identity(pg_server, make_db, prod, unprivileged):
    base = resolve(prod)
    assert base.system_identifier and base.database_oid
    for how, url in spellings(pg_server, prod).items():
        assert resolve(url).same_database(base), how
    fallback = resolve(unprivileged)
    assert fallback.system_identifier is None  # the privilege was revoked in this database
    assert fallback.same_database(base) and base.same_database(fallback)
    other = resolve(make_db())  # another database of the same server
    assert not other.same_database(base) and not other.same_database(fallback)


def test_url_normalisation_is_dns_free():
    assert url_key("postgresql://u@LocalHost.:5432/x") == url_key("postgresql://v@127.0.0.1/x") == ("local", "5432", "x")
    assert url_key("postgresql://u@[::1]/x") == ("local", "5432", "x")
    assert url_key("postgresql://u@db.example.com/x") != url_key("postgresql://u@db2.example.com/x")
    assert url_key("postgresql://app@db.example.com") == ("db.example.com", "5432", "app")  # dbname defaults to the user


@pytest.fixture
def backed_up(make_db, write_settings, prod):
    """prod and dev, a backup of dev, and a third name that is prod in disguise."""
    dev = make_db()
    with psycopg.connect(dev) as conn:
        conn.execute(SCHEMA + "update users set email = 'dev-' || email;")

    def settings(alias: str):
        return write_settings({"dev": dev, "prod": prod, "live": alias}, '[backup]\ndatabases = ["prod"]\ncompress_level = 1\n')

    return settings, dev


def run_cli(capsys, *argv: str) -> tuple[int, dict]:
    code = cli.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_restore_into_prod_under_another_name_needs_confirm(pg_server, backed_up, prod, unprivileged, capsys):
    make, dev = backed_up
    settings = make(prod)
    create_backup(settings, "dev", "manual")
    for how, alias in {**spellings(pg_server, prod), "the same URL": prod, "a role without pg_control_system": unprivileged}.items():
        settings = make(alias)
        before = fingerprint(prod)
        code, body = run_cli(capsys, "backup", "restore", "latest", "--db", "dev", "--to", "live")
        assert code == 1 and body["report"]["status"] == "refused", how
        assert "same database as 'prod'" in body["error"] and "--confirm live" in body["error"], how
        assert fingerprint(prod) == before, how
    settings = make(prod.replace("127.0.0.1", "localhost"))
    code, body = run_cli(capsys, "backup", "restore", "latest", "--db", "dev", "--to", "live", "--confirm", "live")
    assert code == 0, body
    with psycopg.connect(prod) as conn:  # the confirmed restore did replace prod's users with dev's
        assert conn.execute("select count(*) from users where email like 'dev-%'").fetchone()[0] == 5


def test_restore_into_a_database_that_is_the_backups_source_needs_confirm(backed_up, write_settings, make_db, capsys):
    make, dev = backed_up
    settings = write_settings({"dev": dev, "prod": make_db(), "copy": dev.replace("127.0.0.1", "localhost")}, '[backup]\ndatabases = ["prod"]\n')
    create_backup(settings, "dev", "manual")
    code, body = run_cli(capsys, "backup", "restore", "latest", "--db", "dev", "--to", "copy")
    assert code == 1 and "same database as 'dev'" in body["error"]


def test_restore_refuses_when_a_protected_database_cannot_be_checked(backed_up, write_settings, make_db, capsys):
    make, dev = backed_up
    scratch = make_db()
    settings = write_settings({"dev": dev, "prod": "postgresql://u:pw@127.0.0.1:1/nowhere", "scratch": scratch}, '[backup]\ndatabases = ["prod"]\n')
    create_backup(settings, "dev", "manual")
    code, body = run_cli(capsys, "backup", "restore", "latest", "--db", "dev", "--to", "scratch")
    assert code == 1 and "cannot tell whether it is 'prod'" in body["error"] and "pw@" not in body["error"]
    code, body = run_cli(capsys, "backup", "restore", "latest", "--db", "dev", "--to", "scratch", "--confirm", "scratch")
    assert code == 0, body


def test_staging_clone_refuses_a_target_that_is_prod_or_the_source(pg_server, make_db, write_settings, prod):
    dev = make_db()
    with psycopg.connect(dev) as conn:
        conn.execute(SCHEMA + "delete from users;")
    toml = '[backup]\ndatabases = ["prod"]\n[staging_clone]\nsource = "dev"\ntarget = "staging"\nschemas = ["public"]\n'
    for how, alias in spellings(pg_server, prod).items():
        before = fingerprint(prod)
        answer = clone(write_settings({"dev": dev, "prod": prod, "staging": alias}, toml))
        assert answer.status == 422 and "same database as 'prod'" in answer.body["error"], how
        assert fingerprint(prod) == before, how  # prod's users are still there
    before = fingerprint(dev)
    answer = clone(write_settings({"dev": dev, "prod": prod, "staging": dev.replace("127.0.0.1", "localhost")}, toml))
    assert answer.status == 422 and "same database as 'dev'" in answer.body["error"]
    answer = clone(write_settings({"dev": dev, "prod": prod, "staging": dev.replace("127.0.0.1", "localhost")}, toml), dry_run=True)
    assert answer.status == 422  # not even a dry run
    assert fingerprint(dev) == before
    # the staging target may be listed in backup.databases itself: cloning into it is its purpose
    staging = make_db()
    answer = clone(write_settings({"dev": dev, "prod": prod, "staging": staging}, toml.replace('["prod"]', '["prod", "staging"]')))
    assert answer.status == 200, answer.body
    assert answer.body["details"]["target_identity"]["same_database_as"] == []


def test_content_sync_refuses_source_equal_to_target_by_identity(pg_server, prod, unprivileged, write_settings):
    before = fingerprint(prod)
    for how, alias in {**spellings(pg_server, prod), "a role without pg_control_system": unprivileged}.items():
        for mode in ("compare", "dry-run", "sync"):
            answer = content_sync(write_settings({"dev": alias, "prod": prod}, CONTENT), mode)
            assert answer.status == 400 and "same database" in answer.body["error"], (how, mode)
    assert fingerprint(prod) == before


def test_migrate_rehearsal_refuses_a_scratch_that_is_a_protected_database(pg_server, make_db, write_settings, prod):
    from safesync.functions import migrate

    cs = make_db()
    toml = '[backup]\ndatabases = ["prod"]\n[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n' + CONTENT.replace('target = "prod"', 'target = "shop"')
    settings = write_settings({"dev": make_db(), "prod": prod, "shop": cs, "scratch": cs.replace("127.0.0.1", "localhost")}, toml)
    (settings.base_dir / "migrations").mkdir(exist_ok=True)
    (settings.base_dir / "migrations" / "0001.sql").write_text("create table t (id int);\n")
    answer = migrate.rehearse(settings)
    assert answer.status == 422 and "same database as 'shop'" in answer.body["error"]
    with psycopg.connect(cs) as conn:
        assert conn.execute("select to_regclass('public.t')").fetchone()[0] is None


def test_doctor_reports_names_that_are_one_database(pg_server, make_db, write_settings, prod):
    dev = make_db()
    settings = write_settings(
        {"dev": dev, "prod": prod, "PROD": prod.replace("127.0.0.1", "localhost"), "dev2": dev + "?application_name=x"}, CONTENT
    )
    checks = {c.name: c for c in run_all(settings) if c.area == "databases"}
    assert checks["same database: dev = dev2"].status == WARN
    assert checks["same database: prod = PROD"].status == WARN  # nobody keeps these two apart
    clash = write_settings({"dev": prod.replace("127.0.0.1", "localhost"), "prod": prod}, CONTENT)
    checks = {c.name: c for c in run_all(clash) if c.area == "databases"}
    assert checks["same database: dev = prod"].status == FAIL
    assert "content sync source and target" in checks["same database: dev = prod"].detail
