"""``safesync doctor``: all ✓ on a healthy setup; each broken part is its own ✗ line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from safesync.shared.errors import ConfigError, DatabaseError
from safesync.functions.doctor import run_all
from safesync.shared.preflight import FAIL, OK, WARN, quick

from tests.fsutil import read_only

SCHEMA = """
create table courses (id serial primary key, title text);
create table lessons (id serial primary key, course_id int references courses, title text);
create table users (id serial primary key, email text);
create table progress (user_id int references users, lesson_id int references lessons on delete restrict, primary key (user_id, lesson_id));
"""
CONTENT = """
[content_sync]
source = "dev"
target = "prod"
tables = ["courses", "lessons"]
protected = ["users", "progress"]
"""


@pytest.fixture
def healthy(make_db, write_settings, pg_server, monkeypatch):
    """dev and prod with the schema; prod reached through a role that may
    write only the content tables."""
    dev, prod = make_db(), make_db()
    for url in (dev, prod):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("do $$ begin if not exists (select from pg_roles where rolname = 'doctor_sync') then create role doctor_sync login password 'doctor-sync-pw'; end if; end $$")
        conn.execute("grant usage on schema public to doctor_sync")
        conn.execute("grant select on all tables in schema public to doctor_sync")
        conn.execute("grant insert, update on courses, lessons to doctor_sync")
    sync_url = pg_server.url(psycopg.conninfo.conninfo_to_dict(prod)["dbname"], user="doctor_sync", password="doctor-sync-pw")
    monkeypatch.setenv("PG_BIN", str(pg_server.bin_dir() or os.environ["PG_BIN"]))
    return write_settings({"dev": dev, "prod": sync_url}, CONTENT)


def by_name(checks):
    return {(c.area, c.name): c for c in checks}


def test_healthy_setup_is_all_ok(healthy) -> None:
    checks = run_all(healthy)
    bad = [c for c in checks if c.status != OK]
    assert bad == [], bad
    assert ("databases", "prod") in by_name(checks)


def test_each_problem_is_its_own_failure(healthy, make_db, write_settings, pg_server, monkeypatch, tmp_path) -> None:
    dev = make_db()
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute(SCHEMA + "alter table lessons drop constraint lessons_pkey cascade;")
    settings = write_settings(
        {"dev": dev, "prod": healthy.database_url("prod"), "staging": "postgresql://u:pw@127.0.0.1:1/nowhere"},
        CONTENT,
        storage_url="file://./ro-backups",
    )
    monkeypatch.delenv("PROD_DATABASE_URL")
    monkeypatch.setenv("PG_BIN", "/usr/bin")  # Debian's pg_dump 15, older than the test server
    with read_only(tmp_path / "ro-backups"):
        checks = by_name(run_all(settings))
    failures = {k: c for k, c in checks.items() if c.status == FAIL}
    assert "PROD_DATABASE_URL is not set" in failures[("databases", "prod")].detail
    assert "cannot connect" in failures[("databases", "staging")].detail
    if Path("/usr/bin/pg_dump").exists():
        assert "older than the server" in failures[("tools", "pg_dump")].detail
    assert ("storage", "read/write/delete") in failures
    assert failures[("content sync", "source lessons")].detail == "no primary key"
    assert all(c.advice or c.area == "content sync" for c in failures.values())
    for check in checks.values():  # never a secret
        assert "pw@" not in check.detail and "sentinel" not in check.detail


@pytest.mark.parametrize("required", [False, True], ids=["default", "require_least_privilege"])
def test_a_sync_role_that_could_write_protected_tables_is_judged_as_the_sync_judges_it(make_db, write_settings, required) -> None:
    """A warning, as the sync gives one (its per-transaction proof still
    checks every write); a failure where the config makes the sync refuse."""
    dev, prod = make_db(), make_db()
    for url in (dev, prod):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA + "alter table progress drop constraint progress_lesson_id_fkey, add foreign key (lesson_id) references lessons on delete cascade;")
    config = CONTENT + ("require_least_privilege = true\n" if required else "")
    checks = by_name(run_all(write_settings({"dev": dev, "prod": prod}, config)))
    privilege = checks[("content sync", "role least privilege")]
    assert privilege.status == (FAIL if required else WARN) and "users" in privilege.detail and "safesync roles sql" in privilege.advice
    assert ("require_least_privilege is on" in privilege.detail) == required
    assert checks[("content sync", "progress → lessons")].detail.startswith("ON DELETE CASCADE")


def test_a_policy_that_would_filter_content_and_replica_mode_are_failures(healthy, pg_server) -> None:
    """What the sync refuses at run time (a role subject to row-level
    security on a content table, triggers switched off), doctor says first."""
    prod = healthy.database_url("prod")
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    with psycopg.connect(pg_server.url(dbname), autocommit=True) as conn:
        conn.execute("alter table lessons enable row level security")
        conn.execute("create policy visible on lessons using (true)")
        conn.execute(f"alter database {dbname} set session_replication_role = replica")
    checks = by_name(run_all(healthy))
    rls = checks[("content sync", "target row-level security")]
    assert rls.status == FAIL and "lessons" in rls.detail and "doctor_sync" in rls.detail and "BYPASSRLS" in rls.advice
    assert ("content sync", "source row-level security") not in checks  # dev's owner reads it whole
    assert checks[("content sync", "target triggers")].status == FAIL


def test_quick_preflight_raises_before_any_write(write_settings, make_db) -> None:
    settings = write_settings({"dev": make_db(), "prod": "postgresql://u:pw@127.0.0.1:1/x"})
    quick(settings, ["dev"], tools=True)
    with pytest.raises(DatabaseError, match="preflight: database prod"):
        quick(settings, ["prod"])
    with pytest.raises(ConfigError):
        quick(settings, ["staging"])


def test_cli_doctor_json_exit_code(healthy) -> None:
    proc = subprocess.run([sys.executable, "-m", "safesync.functions.cli", "doctor", "--json"], capture_output=True, text=True)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report
    assert report["details"]["counts"]["fail"] == 0
    assert "doctor-sync-pw" not in proc.stdout + proc.stderr


def test_a_sync_role_that_may_set_role_to_a_writer_is_not_least_privilege(healthy, pg_server) -> None:
    """The least-privilege check (doctor, and a sync with
    require_least_privilege) counted what the role *inherits*: a membership
    without INHERIT still lets it ``SET ROLE pg_write_all_data`` and write
    users, and doctor said "can write only content tables"."""
    prod = healthy.database_url("prod")
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    with psycopg.connect(pg_server.url(dbname), autocommit=True) as admin:
        admin.execute("grant pg_write_all_data to doctor_sync with inherit false")
        try:
            with psycopg.connect(prod, autocommit=True) as conn:  # the route is real
                conn.execute("set role pg_write_all_data")
                conn.execute("begin")
                conn.execute("delete from users")
                conn.execute("rollback")
            privilege = by_name(run_all(healthy))[("content sync", "role least privilege")]
        finally:
            admin.execute("revoke pg_write_all_data from doctor_sync")
    assert privilege.status == WARN and "users" in privilege.detail, privilege  # WARN: require_least_privilege is off


def test_a_malformed_body_limit_is_a_doctor_failure(healthy, monkeypatch) -> None:
    """With ``SAFESYNC_MAX_BODY_BYTES=1MB`` every HTTP request is refused
    (400) while doctor listed every check ✓."""
    monkeypatch.setenv("SAFESYNC_MAX_BODY_BYTES", "1MB")
    check = by_name(run_all(healthy))[("config", "SAFESYNC_MAX_BODY_BYTES")]
    assert check.status == FAIL and "'1MB'" in check.detail and "every HTTP request" in check.advice


@pytest.mark.parametrize("key, status", [
    ("MDEyMzQ1Njc4OWFiY2RlZg==", FAIL),  # 16 bytes: the calendar refuses it ("must be 32 bytes")
    ("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", OK),  # hex: the calendar takes it
    ("c2VudGluZWwtZW5jcnlwdGlvbi1rZXktMzJieXRlcyE=\n", OK),  # a secret file's newline
])
def test_the_encryption_key_is_judged_as_the_calendar_reads_it(healthy, monkeypatch, key, status) -> None:
    """Doctor had its own reading of SAFESYNC_ENCRYPTION_KEY (base64 of 16,
    24 or 32 bytes): a 16-byte key was "✓ 128-bit key" while the calendar
    refused it, and a 64-hex-digit key, which the calendar takes, was ✗."""
    monkeypatch.setenv("SAFESYNC_ENCRYPTION_KEY", key)
    check = by_name(run_all(healthy))[("secrets", "SAFESYNC_ENCRYPTION_KEY")]
    assert check.status == status, check
    assert key.strip() not in check.detail


def test_an_admin_token_equal_to_the_api_token_is_a_failure(healthy, monkeypatch) -> None:
    """Both tokens were "present" ✓ when they were the same value, which
    makes every API caller (a CI job, the status page's login) an admin
    that may restore into production or migrate it."""
    from tests import sentinels

    monkeypatch.setenv("SAFESYNC_ADMIN_TOKEN", sentinels.SECRETS["SAFESYNC_API_TOKEN"])
    check = by_name(run_all(healthy))[("secrets", "SAFESYNC_ADMIN_TOKEN")]
    assert check.status == FAIL and check.detail == "the same value as SAFESYNC_API_TOKEN: every API caller is an admin"
    assert sentinels.SECRETS["SAFESYNC_API_TOKEN"] not in check.detail + check.advice


def test_a_security_definer_routine_that_writes_users_is_not_least_privilege(healthy, pg_server) -> None:
    """A SECURITY DEFINER function runs with its owner's rights: callable
    by PUBLIC (PostgreSQL's default) and owned by the tables' owner, it
    lets the sync role delete users whatever its grants — and doctor said
    "can write only content tables". One that only reads (STABLE: the
    server refuses INSERT/UPDATE/DELETE in it) is no route."""
    prod = healthy.database_url("prod")
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    with psycopg.connect(pg_server.url(dbname), autocommit=True) as admin:
        admin.execute("create function public.forget_user(uid int) returns void language plpgsql security definer"
                      " as $$ begin delete from users where id = uid; end $$")
        admin.execute("create function public.user_count() returns bigint language sql stable security definer as $$ select count(*) from users $$")
        with psycopg.connect(prod, autocommit=True) as conn:  # the route is real
            conn.execute("begin")
            conn.execute("select public.forget_user(1)")
            conn.execute("rollback")
        checks = by_name(run_all(healthy))
        route = checks[("content sync", "role least privilege: definer routines")]
        assert route.status == WARN and "public.forget_user(uid integer)" in route.detail and "user_count" not in route.detail, route
        assert "REVOKE EXECUTE".lower() in route.advice.lower()
        admin.execute("revoke execute on function public.forget_user(int) from public")
        checks = by_name(run_all(healthy))
        assert ("content sync", "role least privilege: definer routines") not in checks
        assert checks[("content sync", "role least privilege")].status == OK
