"""Every operation on a Supabase platform database, as a hosted project's
user connects: the ``postgres`` role, not a superuser, not a member of
``supabase_admin`` (``tests/fixtures/supabase_platform``: built from
Supabase's own migrations).
"""

from __future__ import annotations

import psycopg
import pytest

from safesync.functions.staging_clone import clone
from safesync.functions.validate import validate
from safesync.functions.validate.catalog import describe_schema
from safesync.shared.db import connect, database_fingerprint

SCHEMAS = ["public", "auth", "storage"]
TOML = """
[staging_clone]
source = "dev"
target = "staging"
schemas = ["public", "auth", "storage"]

[validate]
database = "dev"
schemas = ["public", "auth", "storage"]
"""


def run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def state(url: str) -> tuple[dict, dict]:
    with connect(url) as conn:
        return describe_schema(conn, SCHEMAS), database_fingerprint(conn, SCHEMAS)


@pytest.fixture
def project(supabase, write_settings):
    """dev and staging: two projects of the same platform; ``admin`` URLs
    connect as supabase_admin (the platform, not the user)."""
    dev, staging = supabase.create_database(), supabase.create_database()
    settings = write_settings({"dev": dev, "staging": staging}, TOML)
    admin = {name: supabase.url(url.rsplit("/", 1)[1], user="supabase_admin") for name, url in (("dev", dev), ("staging", staging))}
    return settings, dev, staging, admin


def test_the_fixture_connects_as_hosted_supabase_users_do(project):
    _, dev, _, _ = project
    with psycopg.connect(dev) as conn:
        me = conn.execute("select rolname, rolsuper, rolcreaterole, rolbypassrls from pg_roles where rolname = current_user").fetchone()
        member_of = {r[0] for r in conn.execute(
            "select b.rolname from pg_auth_members m join pg_roles b on b.oid = m.roleid where m.member = 'postgres'::regrole"
        )}
        owners = dict(conn.execute("select nspname, pg_get_userbyid(nspowner) from pg_namespace where nspname in ('auth', 'storage')"))
        assert conn.execute("select count(*) from pg_event_trigger").fetchone()[0] >= 5
        assert conn.execute("select count(*) from pg_default_acl where defaclrole = 'supabase_admin'::regrole").fetchone()[0] > 0
    assert me == ("postgres", False, True, True)
    assert {"anon", "authenticated", "service_role", "supabase_auth_admin", "supabase_storage_admin"} <= member_of
    assert "supabase_admin" not in member_of
    assert owners == {"auth": "supabase_admin", "storage": "supabase_admin"}


def test_clone_of_public_auth_storage_as_postgres_twice_is_identical_and_login_works(project):
    settings, dev, staging, _ = project
    # staging drifted: its own rows, default privileges and realtime setup
    run(
        staging,
        "delete from public.todos where id % 7 = 0",
        "alter default privileges in schema public grant select on tables to anon",
        "alter publication supabase_realtime drop table public.todos",
        "create table public.staging_notes (id int primary key)",
    )
    # dev publishes a filtered column list
    run(dev, "alter publication supabase_realtime set table public.todos (id, user_id, task) where (id > 10)")

    for attempt in (1, 2):
        answer = clone(settings)
        body = answer.body
        assert answer.exit_code == 0, (attempt, body.get("error"), body.get("detail"))
        assert body["details"]["identical"] is True
        assert body["tables"]["schema differences"] == [] and body["tables"]["data differences"] == []
        kept = " ".join(body["details"]["plan"]["kept_as_on_target"])
        assert "schema auth" in kept and "default privileges of role supabase_admin" in kept
    assert state(staging) == state(dev)
    with psycopg.connect(staging) as conn:
        assert conn.execute("select to_regclass('public.staging_notes')").fetchone()[0] is None
        # what GoTrue does at login: its role reads and writes auth.users
        conn.execute("set role supabase_auth_admin")
        assert conn.execute("select count(*) from auth.users").fetchone()[0] == 30
        conn.execute("update auth.users set last_sign_in_at = now() where email = 'user1@example.com'")
        conn.execute("reset role")
        published = conn.execute(
            "select pg_get_expr(prqual, prrelid), prattrs::text from pg_publication_rel where prrelid = 'public.todos'::regclass"
        ).fetchall()
    assert published == [("(id > 10)", "1 2 3")]


def test_clone_refuses_what_postgres_may_not_change_and_names_it(project):
    settings, dev, staging, admin = project
    # the platform's own default privileges differ between the projects
    run(admin["dev"], "alter default privileges for role supabase_admin in schema public revoke all on sequences from anon")
    before = state(staging)

    answer = clone(settings)

    assert answer.exit_code == 1 and answer.status == 422 and answer.permanent
    error = answer.body["error"]
    assert "default privileges of role supabase_admin" in error and "postgres is not a member of role supabase_admin" in error
    assert state(staging) == before


def test_event_trigger_on_a_cloned_function_is_refused_without_superuser(project):
    settings, dev, staging, admin = project
    run(
        admin["dev"],
        "create function public.log_ddl() returns event_trigger language plpgsql as $$ begin null; end $$",
        "create event trigger log_ddl on ddl_command_end execute function public.log_ddl()",
    )
    before = state(staging)

    answer = clone(settings)

    assert answer.status == 422 and "event trigger(s) log_ddl" in answer.body["error"] and "superuser" in answer.body["error"]
    assert state(staging) == before


def test_validate_compares_publication_membership_and_event_triggers(project):
    settings, dev, staging, admin = project
    assert validate(settings, "dev", against="staging").exit_code == 0
    run(staging, "alter publication supabase_realtime set table public.todos (id, task)")
    run(admin["staging"], "alter event trigger pgrst_ddl_watch disable")

    body = validate(settings, "dev", against="staging").body

    differences = {(d["kind"], d["object"]) for d in body["tables"]["schema differences"]}
    assert ("publication tables", "supabase_realtime public.todos") in differences
    assert ("event triggers", "pgrst_ddl_watch") in differences


BACKUP_TOML = TOML + """
[backup]
databases = ["dev"]
"""


@pytest.fixture
def backups(supabase, write_settings):
    dev, staging = supabase.create_database(), supabase.create_database()
    settings = write_settings({"dev": dev, "staging": staging}, BACKUP_TOML)
    admin = {name: supabase.url(url.rsplit("/", 1)[1], user="supabase_admin") for name, url in (("dev", dev), ("staging", staging))}
    return settings, dev, staging, admin


def test_backup_verify_with_restore_drill_as_postgres(backups):
    from safesync.functions.backup import create_backup, verify_backup

    settings, dev, _, _ = backups
    info = create_backup(settings, "dev", "manual")

    result = verify_backup(settings, info.id, restore_drill_too=True)

    assert result.ok, result.all_problems
    drill = result.drill
    assert drill["restored_as"] == "postgres" and drill["mismatches"] == []
    not_restored = " ".join(drill["not_restored"])
    # named, with the privilege that is missing, never silently dropped
    assert "event trigger" in not_restored and "needs superuser" in not_restored
    assert "ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin needs membership" in not_restored
    assert "schema auth: created owned by postgres" in " ".join(drill["kept"])


def test_restore_into_another_project_keeps_owners_and_login_works(backups):
    from safesync.functions.backup import create_backup
    from safesync.functions.backup.restore import restore_backup

    settings, dev, staging, _ = backups
    run(dev, "update public.profiles set username = 'alice' where full_name = 'User 1'")
    info = create_backup(settings, "dev", "manual")

    result = restore_backup(settings, info.id, "staging")

    assert all(row["match"] for row in result.tables), result.tables
    kept = " ".join(result.kept)
    assert "event trigger pgrst_ddl_watch" in kept and "schema auth" in kept
    with psycopg.connect(staging) as conn:
        owner = conn.execute("select pg_get_userbyid(relowner) from pg_class where oid = 'auth.users'::regclass").fetchone()[0]
        conn.execute("set role supabase_auth_admin")
        assert conn.execute("select count(*) from auth.users").fetchone()[0] == 30
        conn.execute("reset role")
        assert conn.execute("select username from public.profiles where full_name = 'User 1'").fetchone()[0] == "alice"
    assert owner == "supabase_auth_admin"
    assert not [w for w in result.warnings if "can no longer read" in w]


def test_restore_refuses_what_postgres_cannot_create_naming_it(backups, supabase):
    from safesync.functions.backup import create_backup
    from safesync.functions.backup.restore import restore_backup
    from safesync.shared.errors import Refused

    settings, dev, _, _ = backups
    info = create_backup(settings, "dev", "manual")
    empty = supabase.create_database(empty=True)  # a database without the platform
    settings = type(settings)  # noqa: F841  (the same config, another target below)
    import os

    os.environ["STAGING_DATABASE_URL"] = empty
    from safesync.shared.config import load_settings

    settings = load_settings(os.environ["SAFESYNC_CONFIG"])
    with psycopg.connect(empty) as conn:
        before = conn.execute("select count(*) from pg_class where relnamespace = 'public'::regnamespace").fetchone()[0]

    with pytest.raises(Refused) as refused:
        restore_backup(settings, info.id, "staging")

    message = refused.value.message
    assert "moddatetime: creating it needs superuser" in message
    assert "supabase_admin" in message and "--no-owner" in message
    with psycopg.connect(empty) as conn:
        assert conn.execute("select count(*) from pg_class where relnamespace = 'public'::regnamespace").fetchone()[0] == before


def test_migrate_rehearses_the_schemas_it_is_told_to_as_postgres(supabase, write_settings, tmp_path):
    """On the platform the rehearsal cannot clone every schema (the
    platform's own belong to supabase_admin): the refusal says which to
    list; with [migrate] schemas it rehearses, finds a loss in public and
    nothing in auth, and apply migrates."""
    from safesync.functions import migrate

    prod, scratch = supabase.create_database(), supabase.create_database()
    run(prod,
        "create table public.notes (id uuid primary key references auth.users on delete cascade, body text)",
        "insert into auth.users (id, email) select gen_random_uuid(), 'u' || g || '@example.test' from generate_series(1, 5) g",
        "insert into public.notes select id, email from auth.users")
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_bio.sql").write_text("alter table public.notes add column bio text;\n")
    toml = '[backup]\ndatabases = ["prod"]\n[migrate]\ndatabase = "prod"\nsql_dir = "migrations"\nrehearse_on = "scratch"\n'
    every = migrate.rehearse(write_settings({"prod": prod, "scratch": scratch}, toml))
    assert every.status == 422 and 'set [migrate] schemas' in every.body["error"] and "supabase_admin" in every.body["error"]

    settings = write_settings({"prod": prod, "scratch": scratch}, toml + 'schemas = ["public", "auth", "storage"]\n')
    rehearsal = migrate.rehearse(settings)
    assert rehearsal.exit_code == 0, rehearsal.body["summary"]
    assert rehearsal.body["tables"]["existing data lost"] == [] and rehearsal.body["tables"]["data differences"] == []
    assert migrate.apply(settings).exit_code == 0

    (tmp_path / "migrations" / "0002_trim.sql").write_text("delete from public.notes where body like 'u1@%';\n")
    lost = migrate.rehearse(settings)
    assert lost.exit_code == 1 and [r["object"] for r in lost.body["tables"]["existing data lost"]] == ["public.notes"]
    bad = write_settings({"prod": prod, "scratch": scratch}, toml + 'schemas = ["public", "nope"]\n')
    assert migrate.rehearse(bad).status == 400


def test_a_restore_blocked_by_another_roles_session_is_cancelled_as_postgres(supabase, write_settings):
    """The lock watch cancels the restore's own backend (pg_cancel_backend:
    no privilege needed for one's own) and names who blocks it from
    pg_locks and pg_stat_activity — as the non-superuser ``postgres``, with
    the blocker another role's session (here supabase_admin's, idle in a
    transaction that read public.profiles): cancelled, rolled back, the
    lock and its holder named."""
    from safesync.functions.backup import create_backup
    from safesync.functions.backup.restore import restore_backup
    from safesync.shared.errors import JobFailed

    dev, staging = supabase.create_database(), supabase.create_database()
    settings = write_settings({"dev": dev, "staging": staging}, BACKUP_TOML + "restore_lock_wait_seconds = 1\n")
    run(dev, "update public.profiles set username = 'from-dev' where full_name = 'User 1'")
    info = create_backup(settings, "dev", "manual")
    before = state(staging)
    holder = psycopg.connect(supabase.url(staging.rsplit("/", 1)[1], user="supabase_admin"), application_name="web-app")
    holder.execute("select count(*) from public.profiles")  # then idle in its transaction, holding ACCESS SHARE
    try:
        with pytest.raises(JobFailed) as caught:
            restore_backup(settings, info.id, "staging")
        pid = holder.info.backend_pid
    finally:
        holder.rollback()
        holder.close()
    message = caught.value.message
    assert "cancelled" in message and "nothing was restored" in message and f"pid {pid}" in message, message
    assert "AccessExclusiveLock on" in message, message
    assert f"pid {pid} (application 'web-app', user 'supabase_admin', idle in transaction)" in message, message  # postgres may read pg_stat_activity (pg_read_all_stats)
    assert state(staging) == before
