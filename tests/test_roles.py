"""``safesync roles sql``: the generated script applied to a real PostgreSQL
holding the LMS fixture; then each role is used and what it may not do is
shown to be refused by the server itself ("permission denied")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql

from safesync.functions import cli
from safesync.functions.roles import BACKUP_ROLE, CALENDAR_ROLE, CONTENT_ROLE, generate
from safesync.shared.config import Config, Settings, parse_config
from safesync.shared.pgtools import find_tool
from tests.fixtures.lms import LMS_CONTENT, LMS_PROTECTED, create_lms, lms_config_toml

REPO = Path(__file__).resolve().parents[1]
ROLES_SQL = REPO / "infra" / "roles.sql"

# The example config of the design guide (what infra/roles.sql is generated from).
EXAMPLE_CONFIG = """
[databases]
dev = "DEV_DATABASE_URL"
staging = "STAGING_DATABASE_URL"
prod = "PROD_DATABASE_URL"

[backup]
databases = ["prod"]

[content_sync]
source = "dev"
target = "prod"
tables = ["courses", "lessons", "resources", "events", "promotions", "products", "prices"]
protected = ["users", "enrollments", "course_progress", "lesson_progress", "payments", "subscriptions", "user_streaks", "user_streak_badges", "user_points_history", "weekly_lesson_completions", "streak_recovery_history"]

[calendar]
database = "prod"
"""


def example_settings() -> Settings:
    return Settings(parse_config(EXAMPLE_CONFIG, source="example"), base_dir=REPO, source="example", env={})


def settings_for(extra: str = "", **kw) -> Settings:
    text = EXAMPLE_CONFIG.split("[content_sync]")[0] + lms_config_toml(**kw) + "\n[calendar]\ndatabase = \"prod\"\n" + extra
    return Settings(parse_config(text, source="test"), base_dir=REPO, source="test", env={})


def apply(url: str, script: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(script.encode())


def as_role(pg_server, url: str, role: str) -> psycopg.Connection:
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    return psycopg.connect(pg_server.url(dbname, user=role, password=None), autocommit=True)


def denied(conn: psycopg.Connection, statement: sql.Composable, table: str) -> bool:
    try:
        conn.execute(statement)
    except errors.InsufficientPrivilege as exc:
        assert f"permission denied for table {table}" in str(exc), str(exc)
        return True
    return False


def first_column(url: str, table: str) -> str:
    """A column an UPDATE may name (not identity ALWAYS, not generated)."""
    with psycopg.connect(url) as admin:
        return admin.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 and not attisdropped and attidentity = '' and attgenerated = '' order by attnum limit 1",
            [table],
        ).fetchone()[0]


def writes(url: str, table: str) -> dict[str, sql.Composable]:
    """INSERT/UPDATE/DELETE/TRUNCATE on ``table`` — refused at permission
    check, before any constraint could reject a row."""
    t, c = sql.Identifier(table), sql.Identifier(first_column(url, table))
    return {
        "INSERT": sql.SQL("insert into {} default values").format(t),
        "UPDATE": sql.SQL("update {t} set {c} = {c}").format(t=t, c=c),
        "DELETE": sql.SQL("delete from {}").format(t),
        "TRUNCATE": sql.SQL("truncate {} cascade").format(t),
    }


@pytest.fixture
def lms(make_db):
    prod, dev = make_db(), make_db()
    create_lms(prod, variant="prod")
    create_lms(dev, variant="dev")
    return prod, dev


def test_infra_roles_sql_is_the_generator_output_for_the_example_config():
    assert ROLES_SQL.read_text() == generate(example_settings(), "prod"), (
        "infra/roles.sql is stale: python -m tests.test_roles > infra/roles.sql"
    )
    text = ROLES_SQL.read_text()
    assert "PASSWORD NULL" in text and "\\password safesync_content_sync" in text
    assert "PASSWORD '" not in text.upper().replace("PASSWORD NULL", "")


def test_content_sync_role_is_denied_every_protected_table_and_writes_content(pg_server, lms):
    prod, _ = lms
    settings = settings_for()
    apply(prod, generate(settings, "prod"))
    with psycopg.connect(prod, autocommit=True) as admin:
        existing = {r[0] for r in admin.execute("select tablename from pg_tables where schemaname = 'public'")}
    assert set(LMS_PROTECTED) <= existing

    with as_role(pg_server, prod, CONTENT_ROLE) as conn:
        for table in LMS_PROTECTED:
            for verb, statement in writes(prod, table).items():
                assert denied(conn, statement, table), f"{CONTENT_ROLE} could {verb} {table}"
            # reading is allowed: the safety backup before each sync is a complete pg_dump
            conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table)))
        # Content tables: read, insert (sequences usable), update; no DELETE without delete_missing.
        for table in LMS_CONTENT:
            conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table)))
            assert denied(conn, sql.SQL("delete from {} where false").format(sql.Identifier(table)), table)
        new_id = conn.execute("insert into courses (slug, title) values ('roles-test', 'Roles') returning id").fetchone()[0]
        conn.execute("insert into lessons (course_id, position, title, updated_at) values (%s, 1, 'L1', now())", [new_id])
        assert conn.execute("update courses set title = title || '!' where id = %s", [new_id]).rowcount == 1
        assert conn.execute("select setval(pg_get_serial_sequence('courses', 'id'), %s)", [new_id + 10]).fetchone()
        # The runner's bookkeeping, and creating its own ledger table in the safesync schema.
        conn.execute("insert into safesync.deliveries (delivery_key, source, job, target, state) values ('m1', 'qstash', 'content_sync', 'prod', 'running')")
        conn.execute("update safesync.deliveries set state = 'done', status = 200 where delivery_key = 'm1'")
        conn.execute("create table safesync.ledger_probe (k text primary key)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("create table public.sneaky (x int)")
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied for schema calendar"):
            conn.execute("create table calendar.sneaky (x int)")


def test_delete_missing_grants_delete_and_a_config_change_revokes(pg_server, lms):
    prod, _ = lms
    apply(prod, generate(settings_for(delete_missing=True), "prod"))
    with as_role(pg_server, prod, CONTENT_ROLE) as conn:
        conn.execute("delete from prices where false")
        conn.execute("update prices set id = id where false")
    # prices leaves the content list (now protected): re-running the script takes it away.
    narrowed = lms_config_toml(delete_missing=True).replace('"prices"]', "]", 1).replace(', "prices"', "")
    narrowed = narrowed.replace('protected = ["users"', 'protected = ["prices", "users"')
    text = EXAMPLE_CONFIG.split("[content_sync]")[0] + narrowed + '\n[calendar]\ndatabase = "prod"\n'
    settings = Settings(parse_config(text, source="t"), base_dir=REPO, source="t", env={})
    assert "prices" not in settings.config.content_sync.tables
    script = generate(settings, "prod")
    apply(prod, script)
    apply(prod, script)  # idempotent
    with as_role(pg_server, prod, CONTENT_ROLE) as conn:
        for verb, statement in writes(prod, "prices").items():
            assert denied(conn, statement, "prices"), verb
        conn.execute("update products set id = id where false")


def test_backup_role_reads_everything_writes_nothing_and_pg_dump_works(pg_server, lms, tmp_path):
    prod, _ = lms
    with psycopg.connect(prod, autocommit=True) as admin:  # RLS as Supabase has it: pg_dump must not be filtered
        admin.execute("alter table payments enable row level security")
        admin.execute("create policy nobody on payments using (false)")
    apply(prod, generate(settings_for(), "prod"))
    with as_role(pg_server, prod, BACKUP_ROLE) as conn:
        for table in LMS_CONTENT + LMS_PROTECTED:
            conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table)))
            for verb, statement in writes(prod, table).items():
                assert denied(conn, statement, table), f"{BACKUP_ROLE} could {verb} {table}"
        assert conn.execute("select count(*) from payments").fetchone()[0] > 0  # BYPASSRLS: every row
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    out = tmp_path / "prod.dump"
    url = pg_server.url(dbname, user=BACKUP_ROLE, password=None)
    done = subprocess.run([str(find_tool("pg_dump").path), "--format=custom", f"--file={out}", url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 1000


def test_source_database_script_is_read_only_on_content(pg_server, lms):
    _, dev = lms
    script = generate(settings_for(), "dev")
    assert f"CREATE ROLE {BACKUP_ROLE}" not in script and f"CREATE ROLE {CALENDAR_ROLE}" not in script
    apply(dev, script)
    with as_role(pg_server, dev, CONTENT_ROLE) as conn:
        conn.execute("select count(*) from lessons")
        for table in ("lessons", "users"):
            for verb, statement in writes(dev, table).items():
                assert denied(conn, statement, table), f"{verb} {table}"


def test_calendar_role_owns_only_its_schema(pg_server, lms):
    prod, _ = lms
    apply(prod, generate(settings_for(), "prod"))
    with as_role(pg_server, prod, CALENDAR_ROLE) as conn:
        conn.execute("create table calendar.events_probe (id bigint generated always as identity primary key, t text)")
        conn.execute("insert into calendar.events_probe (t) values ('x')")
        for verb, statement in writes(prod, "events").items():
            assert denied(conn, statement, "events"), verb
        assert denied(conn, sql.SQL("select * from users"), "users")


def test_a_public_grant_on_a_protected_table_rolls_the_script_back(lms):
    prod, _ = lms
    with psycopg.connect(prod, autocommit=True) as admin:
        admin.execute("grant insert on payments to public")
        with pytest.raises(errors.RaiseException, match="could still write a non-content table: public.payments"):
            admin.execute(generate(settings_for(), "prod").encode())
        admin.execute("rollback")
        assert admin.execute("select to_regnamespace('calendar')").fetchone()[0] is None  # nothing was kept


def test_a_column_grant_on_a_protected_table_rolls_the_script_back(lms):
    """The proof asked has_table_privilege, which sees table-level grants
    only: ``GRANT UPDATE (email) ON users TO PUBLIC`` (a column grant, as
    Supabase apps use for "may edit their own name") let the content-sync
    role rewrite that column of every user while the script said done."""
    prod, _ = lms
    column = first_column(prod, "users")
    with psycopg.connect(prod, autocommit=True) as admin:
        admin.execute(sql.SQL("grant update ({}) on users to public").format(sql.Identifier(column)))
        with pytest.raises(errors.RaiseException, match="could still write a non-content table: public.users"):
            admin.execute(generate(settings_for(), "prod").encode())
        admin.execute("rollback")
        admin.execute(sql.SQL("revoke update ({}) on users from public").format(sql.Identifier(column)))
        admin.execute(generate(settings_for(), "prod").encode())  # without it: applied


@pytest.mark.parametrize("grant", ["grant trigger on users to public", "alter table users owner to safesync_content_sync"])
def test_a_trigger_grant_or_ownership_of_a_protected_table_rolls_the_script_back(pg_server, lms, grant):
    """The script's proof and doctor's least-privilege check each said what
    "could write" means, differently: the proof left out TRIGGER (a trigger
    on users runs its function for whoever writes users next) and ownership
    (an owner may grant itself anything back, ALTER or DROP the table).
    Doctor counted both; the proof now asks the same condition."""
    prod, _ = lms
    apply(prod, generate(settings_for(), "prod"))
    with psycopg.connect(prod, autocommit=True) as admin:
        owner = admin.execute("select tableowner from pg_tables where schemaname = 'public' and tablename = 'users'").fetchone()[0]
        admin.execute(grant)
        try:
            if "owner" in grant:  # an owner without privileges on its table still takes them back
                admin.execute("revoke all on users from safesync_content_sync")
            with pytest.raises(errors.RaiseException, match="could still write a non-content table: public.users"):
                admin.execute(generate(settings_for(), "prod").encode())
            admin.execute("rollback")
        finally:
            admin.execute(sql.SQL("alter table users owner to {}").format(sql.Identifier(owner)) if "owner" in grant else "revoke trigger on users from public")
        admin.execute(generate(settings_for(), "prod").encode())


@pytest.mark.parametrize("route", ["set role", "createrole"])
def test_a_role_that_can_become_a_writer_rolls_the_script_back(pg_server, lms, route):
    """The proof counted only privileges the role *inherits*. A membership
    it does not inherit (``WITH INHERIT FALSE``, or a NOINHERIT role) still
    lets it ``SET ROLE`` to the writer and write payments; an existing role
    with CREATEROLE (the script creates roles NOCREATEROLE, but only when
    missing) can give itself what it lacks. Both rolled nothing back."""
    prod, _ = lms
    apply(prod, generate(settings_for(), "prod"))
    setup, undo = {
        "set role": ("grant pg_write_all_data to safesync_content_sync with inherit false",
                     "revoke pg_write_all_data from safesync_content_sync"),
        "createrole": ("alter role safesync_content_sync createrole", "alter role safesync_content_sync nocreaterole"),
    }[route]
    expected = {
        "set role": r"could still write a non-content table: .*public\.payments",
        "createrole": "could give itself any privilege: CREATEROLE",
    }[route]
    with psycopg.connect(prod, autocommit=True) as admin:
        admin.execute(setup)
        try:
            if route == "set role":  # the route is real: the role writes a protected table
                with as_role(pg_server, prod, CONTENT_ROLE) as conn:
                    conn.execute("set role pg_write_all_data")
                    conn.execute("begin")
                    conn.execute("delete from payments")
                    conn.execute("rollback")
            with pytest.raises(errors.RaiseException, match=f"safesync_content_sync {expected}"):
                admin.execute(generate(settings_for(), "prod").encode())
            admin.execute("rollback")
        finally:
            admin.execute(undo)
        admin.execute(generate(settings_for(), "prod").encode())


def test_cli_roles_sql(write_settings, capsys):
    write_settings({"dev": "postgresql://x@127.0.0.1:1/d", "prod": "postgresql://x@127.0.0.1:1/p"}, lms_config_toml())
    assert cli.main(["roles", "sql"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("-- safesync least-privilege roles for database 'prod'") and "COMMIT;" in text
    assert cli.main(["roles", "sql", "--db", "dev", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["database"] == "dev" and "GRANT SELECT ON TABLE" in body["sql"]
    assert cli.main(["roles", "sql", "--db", "nope"]) == 2
    assert "unknown database 'nope'" in capsys.readouterr().err


def test_default_config_without_content_tables_grants_no_content_role():
    settings = Settings(Config(), base_dir=REPO, source="(defaults)", env={})
    script = generate(settings, "prod")
    assert f"CREATE ROLE {CONTENT_ROLE}" not in script and f"CREATE ROLE {BACKUP_ROLE}" in script


if __name__ == "__main__":  # regenerate infra/roles.sql
    sys.stdout.write(generate(example_settings(), "prod"))


def test_backup_job_runs_as_the_backup_role_with_a_restore_drill(pg_server, lms, write_settings):
    """The real backup job, connected as safesync_backup: create, then verify
    with a restore drill (which creates and drops a scratch database)."""
    from safesync.functions.backup.jobs import run_create, run_verify

    prod, _ = lms
    apply(prod, generate(settings_for(), "prod"))
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    settings = write_settings({"prod": pg_server.url(dbname, user=BACKUP_ROLE, password=None)}, "[backup]\ndatabases = [\"prod\"]\n")
    created = run_create(settings, "prod", "manual", trigger={"via": "test"})
    assert created.exit_code == 0, created.body
    verified = run_verify(settings, restore_drill=True, trigger={"via": "test"})
    assert verified.exit_code == 0, verified.body["details"]["results"]
    [result] = verified.body["details"]["results"]
    assert result["ok"] and result["drill"]["ok"] and result["drill"]["rows"] > 0, result


def test_content_sync_job_runs_as_the_content_sync_role(pg_server, lms, write_settings):
    """The real content sync (safety backup, diff, apply, proof), connected as
    safesync_content_sync on both sides: it syncs, and user data is unchanged."""
    from safesync.functions.content_sync import content_sync
    from safesync.shared.db import TableRef, database_fingerprint

    prod, dev = lms
    settings = settings_for()
    apply(prod, generate(settings, "prod"))
    apply(dev, generate(settings, "dev"))
    urls = {name: pg_server.url(psycopg.conninfo.conninfo_to_dict(u)["dbname"], user=CONTENT_ROLE, password=None) for name, u in (("dev", dev), ("prod", prod))}
    job_settings = write_settings(urls, lms_config_toml())
    with psycopg.connect(prod) as admin:
        before = database_fingerprint(admin, ["public"])
    answer = content_sync(job_settings, "sync", adopt=True)  # first sync: no ledger yet
    assert answer.exit_code == 0, answer.body
    with psycopg.connect(prod) as admin:
        after = database_fingerprint(admin, ["public"])
    assert {t: after[t] for t in after if TableRef.parse(str(t)).name in LMS_PROTECTED} == {
        t: before[t] for t in before if TableRef.parse(str(t)).name in LMS_PROTECTED
    }
    assert any(after[t] != before[t] for t in after if TableRef.parse(str(t)).name in LMS_CONTENT)


def test_a_security_definer_routine_around_the_grants_is_named_by_the_script_and_the_sync(pg_server, lms, write_settings):
    """The script's proof and the sync's least-privilege check looked at
    grants only. A SECURITY DEFINER function (PUBLIC may call it, by
    PostgreSQL's default) owned by the tables' owner lets
    safesync_content_sync empty payments: the script warns naming it (it
    cannot revoke PUBLIC's EXECUTE without breaking the application), the
    sync reports least privilege not ok, and with require_least_privilege
    refuses before writing."""
    from safesync.functions.content_sync import content_sync

    prod, dev = lms
    with psycopg.connect(prod, autocommit=True) as admin:
        admin.execute("create function public.refund_all() returns void language plpgsql security definer as $$ begin delete from payments; end $$")
    notices: list[str] = []
    with psycopg.connect(prod, autocommit=True) as admin:
        admin.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))
        admin.execute(generate(settings_for(), "prod").encode())
    owner = psycopg.conninfo.conninfo_to_dict(prod).get("user")
    warned = {n.split()[1]: n for n in notices if "SECURITY DEFINER" in n}
    assert set(warned) == {CONTENT_ROLE, BACKUP_ROLE, CALENDAR_ROLE}, notices  # each role may call it: each is warned
    assert warned[CONTENT_ROLE] == (
        "WARNING: safesync_content_sync could still write a non-content table through SECURITY DEFINER routines, "
        f"which run with their owner's rights whatever its grants: public.refund_all() (owner {owner})"
    )
    apply(dev, generate(settings_for(), "dev"))
    with as_role(pg_server, prod, CONTENT_ROLE) as conn:  # the route is real
        conn.execute("begin")
        conn.execute("select public.refund_all()")
        assert conn.execute("select count(*) from payments").fetchone()[0] == 0
        conn.execute("rollback")

    urls = {name: pg_server.url(psycopg.conninfo.conninfo_to_dict(u)["dbname"], user=CONTENT_ROLE, password=None) for name, u in (("dev", dev), ("prod", prod))}
    answer = content_sync(write_settings(urls, lms_config_toml()), "compare")
    privilege = answer.body["details"]["least_privilege"]
    assert privilege["ok"] is False and privilege["writable_protected"] == [] and privilege["definer_routes"][0].startswith("public.refund_all()")
    assert any("SECURITY DEFINER" in w and "refund_all" in w for w in answer.body["warnings"]), answer.body["warnings"]
    strict = content_sync(write_settings(urls, lms_config_toml(extra="require_least_privilege = true")), "sync", adopt=True)
    assert strict.status == 422 and "refund_all" in strict.body["summary"] and "require_least_privilege" in strict.body["summary"], strict.body
    with psycopg.connect(prod) as admin:
        assert admin.execute("select count(*) from payments").fetchone()[0] > 0
