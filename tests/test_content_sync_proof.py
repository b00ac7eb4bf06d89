"""The protection proof against a hostile target: triggers on content tables
(and on the ledger) that change protected objects in every way the proof
must see — rows, the catalog, sequences, large objects, settings — and
config mistakes that would let a sync write protected rows through
partitioning or inheritance. Every attack ends refused, the target as it
was; the proof names the object and what changed."""

from __future__ import annotations

import psycopg
import pytest

from safesync.functions.content_sync import content_sync
from safesync.shared import db
from tests.fixtures.lms import lms_config_toml

# Tables whose triggers the tests install: acknowledged side channels (SET,
# lo_*, nextval …) so that the proof itself — not the static audit — is what
# must catch each attack.
ACK = 'acknowledge_side_channels = ["lessons", "safesync.content_ledger"]'


@pytest.fixture
def lms(lms):
    """The suite's LMS pair, its config acknowledging ACK unless told otherwise."""
    settings, dev, prod = lms
    return (lambda extra=ACK: settings(extra)), dev, prod


def state(url: str) -> tuple[dict, dict]:
    """Every user table's rows, and the catalog's description of them."""
    with psycopg.connect(url) as conn:
        rows = db.database_fingerprint(conn)
        catalog = conn.execute(
            """
            select c.oid::regclass::text, c.relfilenode, c.relacl::text,
                   array(select a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
                         from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum),
                   array(select t.tgname || t.tgenabled::text from pg_trigger t where t.tgrelid = c.oid order by 1),
                   array(select indexrelid::regclass::text from pg_index where indrelid = c.oid order by 1)
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = 'public' and c.relkind in ('r', 'S')
            """
        ).fetchall()
    return rows, {r[0]: r[1:] for r in catalog}


def trigger(url: str, body: str) -> None:
    """A statement trigger that runs ``body`` (plpgsql) once when the sync
    updates lessons (an upsert fires UPDATE statement triggers once)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create or replace function attack() returns trigger language plpgsql as $$ begin {body}; return null; end $$")
        conn.execute("create trigger attack after update on lessons for each statement execute function attack()")


def refused(settings, mode: str = "sync") -> dict:
    answer = content_sync(settings, mode, adopt=True)
    assert answer.status == 422 and answer.exit_code == 1, answer.body
    assert "rolled back" in answer.body["summary"]
    return answer.body


def violation(body: dict, table: str) -> dict:
    found = {v["table"]: v for v in body["details"]["protection_proof"]["violations"]}
    assert table in found, found
    return found[table]


ATTACKS = {
    "DROP TABLE": ("drop table users cascade", "users", "dropped"),
    "DROP COLUMN": ("alter table users drop column display_name", "users", "column display_name dropped"),
    "TRUNCATE": ("truncate user_streaks", "user_streaks", "truncated or rewritten"),
    "ALTER COLUMN TYPE": ("alter table payments alter column provider_ref type varchar(400)", "payments", "column provider_ref changed"),
    "DROP NOT NULL": ("alter table users alter column created_at drop not null", "users", "column created_at changed"),
    "DROP DEFAULT": ("alter table users alter column settings drop default", "users", "default of column settings dropped"),
    "RENAME": ("alter table payments rename to payments_old", "payments_old", "renamed to payments_old"),
    "RENAME COLUMN": ("alter table users rename column display_name to shown_name", "users", "column display_name renamed to shown_name"),
    "GRANT": ("grant all on users to public", "users", "privileges changed"),
    "RLS off": ("alter table users enable row level security", "users", "row level security changed"),
    "DISABLE TRIGGER": ("alter table users disable trigger all", "users", "trigger"),
    "DROP CONSTRAINT": ("alter table users drop constraint users_email_key", "users", "dropped"),
    "CREATE INDEX": ("create index users_name on users (display_name)", "users", "index users_name created"),
    "CREATE POLICY": ("create policy everyone on users using (true)", "users", "policy everyone created"),
    "CREATE RULE": ("create rule quiet as on delete to payments do instead nothing", "payments", "rule quiet created"),
    "new table": ("create table stolen as select * from users", "stolen", "created"),
    "DDL on a content table": ("alter table courses add column hacked int", "courses", "column hacked added"),
}


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_ddl_by_a_trigger_is_a_write(lms, attack):
    make, dev, prod = lms
    statement, table, change = ATTACKS[attack]
    with psycopg.connect(prod, autocommit=True) as conn:  # something the DISABLE TRIGGER attack can flip
        conn.execute("create function noop() returns trigger language plpgsql as $$ begin return new; end $$")
        conn.execute("create trigger users_noop before update on users for each row execute function noop()")
    trigger(prod, statement)
    before = state(prod)
    body = refused(make(), "sync" if attack in ("DROP TABLE", "DROP COLUMN") else "dry-run")
    assert any(change in c for c in violation(body, table)["changes"]), body["details"]["protection_proof"]
    assert table in body["summary"]
    assert state(prod) == before


OTHER_ATTACKS = {
    "ALTER DOMAIN DROP CONSTRAINT": ("alter domain email_t drop constraint email_at", "constraint email_at of type public.email_t", "dropped"),
    "ALTER DOMAIN DROP NOT NULL": ("alter domain email_t drop not null", "type public.email_t", "changed"),
    "REVOKE on a schema": ("revoke all on schema public from public", "schema public", "changed"),
    "CREATE DOMAIN": ("create domain loose as text", "type public.loose", "created"),
    "DROP SCHEMA": ("drop schema reports", "schema reports", "dropped"),
}


@pytest.mark.parametrize("attack", OTHER_ATTACKS, ids=list(OTHER_ATTACKS))
def test_ddl_on_what_protected_tables_depend_on_is_a_write(lms, attack):
    """Schemas, domains and their constraints describe no relation, yet a
    protected column's rules live there: DDL on them is a write too."""
    make, dev, prod = lms
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            "create domain email_t as text not null constraint email_at check (value like '%@%');"
            "alter table users add column contact email_t not null default 'a@b'; create schema reports"
        )
    statement, label, change = OTHER_ATTACKS[attack]
    trigger(prod, statement)
    before = state(prod)
    body = refused(make(), "dry-run")
    assert any(change in c for c in violation(body, label)["changes"]), body["details"]["protection_proof"]
    assert label in body["summary"]
    assert state(prod) == before


def test_row_writes_through_every_path_are_counted(lms):
    """Rows written in odd places: a user table in information_schema, a
    table behind a view, another safesync table, a materialized view."""
    make, dev, prod = lms
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("create table information_schema.notes (id int)")
        conn.execute("create view public.user_names as select id, display_name from users")
        conn.execute("create schema if not exists safesync; create table safesync.other (id int)")
        conn.execute("create materialized view public.totals as select count(*) from users")
    for body_sql, table in (
        ("insert into information_schema.notes values (1)", "information_schema.notes"),
        ("update user_names set display_name = 'x'", "users"),
        ("insert into safesync.other values (1)", "safesync.other"),
        ("refresh materialized view totals", "totals"),
    ):
        with psycopg.connect(prod, autocommit=True) as conn:
            conn.execute("drop trigger if exists attack on lessons")
        trigger(prod, body_sql)
        before = state(prod)
        body = refused(make(), "dry-run")
        assert violation(body, table), body_sql
        assert state(prod) == before


def test_track_counts_off_for_the_database_refuses_before_writing(lms):
    make, dev, prod = lms
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(f'alter database "{dbname}" set track_counts = off')
    before = state(prod)
    for mode in ("dry-run", "sync"):
        answer = content_sync(make(), mode, adopt=True)
        assert answer.status == 422 and "track_counts is off" in answer.body["summary"]
        assert "safety_backup" not in answer.body["details"]  # refused before anything
    assert state(prod) == before


@pytest.mark.parametrize(
    "body_sql",
    [
        "set local track_counts = off; update users set display_name = 'owned'",
        # switched off, written, switched back on: the lock the UPDATE took remains
        "set local track_counts = off; update users set display_name = 'owned'; set local track_counts = on",
        "perform set_config('track_counts', 'off', true); delete from user_streaks",
    ],
    ids=["left off", "off and on again", "set_config"],
)
def test_track_counts_switched_by_a_trigger_is_caught(lms, body_sql):
    make, dev, prod = lms
    trigger(prod, body_sql)
    before = state(prod)
    body = refused(make())
    assert body["details"]["protection_proof"]["violations"]
    assert state(prod) == before


def test_a_deferred_trigger_on_the_ledger_fires_inside_the_proof(lms):
    """A BEFORE trigger defers every constraint; a DEFERRABLE INITIALLY
    DEFERRED constraint trigger on the ledger would write users at COMMIT,
    after the proof — unless the proof fires it first."""
    make, dev, prod = lms
    assert content_sync(make(), "sync", adopt=True).status == 200  # creates the ledger
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            """
            create function defer_all() returns trigger language plpgsql as $$ begin set constraints all deferred; return new; end $$;
            create trigger a_defer before insert or update on safesync.content_ledger for each row execute function defer_all();
            create function late() returns trigger language plpgsql as $$ begin update users set display_name = 'late'; return null; end $$;
            create constraint trigger z_late after insert or update on safesync.content_ledger
              deferrable initially deferred for each row execute function late();
            """
        )
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("update lessons set title = title || ' v2' where id <= 3")
    before = state(prod)
    body = refused(make())
    assert violation(body, "users")["updated"] > 0
    assert state(prod) == before


def ledger_state(url: str) -> tuple:
    """The ledger's entries and its privileges, owner, RLS flags and file node."""
    with psycopg.connect(url) as conn:
        return (
            sorted(conn.execute("select * from safesync.content_ledger").fetchall(), key=repr),
            conn.execute(
                "select relacl::text, relowner, relrowsecurity, relfilenode, "
                "array(select tgname from pg_trigger where tgrelid = c.oid) from pg_class c where oid = 'safesync.content_ledger'::regclass"
            ).fetchone(),
        )


LEDGER_ATTACKS = {
    "GRANT": ("grant all on safesync.content_ledger to public", "privileges changed after the ledger was opened"),
    "TRUNCATE": ("truncate safesync.content_ledger", "file node changed after the ledger was opened"),
    "RLS": ("alter table safesync.content_ledger enable row level security", "row level security changed after"),
    "new trigger": (
        "create trigger quiet before delete on safesync.content_ledger for each row execute function noop()",
        "triggers changed after the ledger was opened",
    ),
    "entries rewritten": ("update safesync.content_ledger set row_hash = 0 where entry >= 0", "rows written while the content tables were written ("),
    "entries deleted": ("delete from safesync.content_ledger where entry >= 0", "rows written while the content tables were written"),
}


@pytest.mark.parametrize("attack", LEDGER_ATTACKS, ids=list(LEDGER_ATTACKS))
def test_the_ledger_changed_by_anything_but_the_sync_is_a_violation(lms, attack):
    """The proof lets the sync write its ledger; a trigger on a content table
    that re-grants, truncates or rewrites it (an entry that says production
    has not changed a row lets the next sync overwrite a production edit) is
    still caught, and rolled back."""
    make, dev, prod = lms
    assert content_sync(make(), "sync", adopt=True).status == 200  # the ledger exists, seeded
    statement, change = LEDGER_ATTACKS[attack]
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("create function noop() returns trigger language plpgsql as $$ begin return old; end $$")
    trigger(prod, statement)
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("update lessons set title = title || ' v2' where id <= 3")
    before, ledger_before = state(prod), ledger_state(prod)
    body = refused(make())
    changes = violation(body, "safesync.content_ledger")["changes"]
    assert any(change in c for c in changes), changes
    assert "safesync.content_ledger" in body["summary"]
    assert state(prod) == before and ledger_state(prod) == ledger_before


def test_code_on_the_ledger_is_refused_and_a_deferred_rewrite_of_it_is_caught(lms):
    """Any trigger on the ledger is refused by the audit (it runs inside the
    sync's own ledger writes); acknowledged, a BEFORE trigger that defers
    every constraint lets a constraint trigger rewrite entries at the
    proof's SET CONSTRAINTS ALL IMMEDIATE, after the sync recorded its own:
    caught."""
    make, dev, prod = lms
    assert content_sync(make(), "sync", adopt=True).status == 200
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            """
            create function defer_all() returns trigger language plpgsql as $$ begin set constraints all deferred; return new; end $$;
            create trigger a_defer before insert or update on safesync.content_ledger for each row execute function defer_all();
            create function forge() returns trigger language plpgsql as $$
            begin update safesync.content_ledger set declined_hash = 1 where entry >= 0 and declined_hash is null; return null; end $$;
            create constraint trigger z_forge after insert or update on safesync.content_ledger
              deferrable initially deferred for each row execute function forge();
            """
        )
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("update lessons set title = title || ' v2' where id <= 3")
    ledger_before = ledger_state(prod)
    answer = content_sync(make('acknowledge_side_channels = ["lessons"]'), "sync")
    assert answer.status == 422 and "nothing run on the target" in answer.body["summary"], answer.body
    vias = {f["via"] for f in answer.body["details"]["side_channels"] if "safesync's own ledger" in f["reason"]}
    assert vias == {"trigger a_defer", "trigger z_forge"}, answer.body["details"]["side_channels"]
    body = refused(make())
    assert any("rows written after the sync recorded its own" in c for c in violation(body, "safesync.content_ledger")["changes"])
    assert ledger_state(prod) == ledger_before


def test_the_ledger_migration_is_the_syncs_own_change_and_nothing_more(lms):
    """Migrating a first-format ledger changes its columns, constraints and
    file node in the sync's transaction: allowed. A trigger on the old
    ledger that grants it away while the migration updates its rows is not."""
    from tests.test_content_sync_ledger import FIRST_FORMAT

    make, dev, prod = lms
    assert content_sync(make(), "sync", adopt=True).status == 200
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(FIRST_FORMAT)
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("update lessons set title = title || ' v2' where id <= 3")
    first = ledger_state(prod)
    answer = content_sync(make(), "dry-run")  # migrates, syncs and rolls back: the proof accepts the migration
    assert answer.status == 200 and answer.body["details"]["protection_proof"]["ok"], answer.body
    assert ledger_state(prod) == first
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            "create function give_away() returns trigger language plpgsql as $$ begin grant all on safesync.content_ledger to public; return null; end $$;"
            "create trigger give_away after update on safesync.content_ledger for each statement execute function give_away()"
        )
    first = ledger_state(prod)
    body = refused(make())
    assert any("privileges changed while safesync migrated it" in c for c in violation(body, "safesync.content_ledger")["changes"])
    assert ledger_state(prod) == first


def test_an_event_trigger_on_the_ledger_migration_is_audited(lms):
    """The migration runs ALTER TABLE: an event trigger on that tag fires
    inside the sync — audited then, and only then."""
    from tests.test_content_sync_ledger import FIRST_FORMAT

    make, dev, prod = lms
    assert content_sync(make(), "sync", adopt=True).status == 200
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            "create function tell() returns event_trigger language plpgsql as $$ begin perform pg_notify('ddl', 'migrated'); end $$;"
            "create event trigger tell_alter on sql_drop when tag in ('ALTER TABLE') execute function tell()"
        )
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("update lessons set title = title || ' v2' where id <= 3")
    assert content_sync(make(), "dry-run").status == 200  # the ledger is current: the event trigger does not fire
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(FIRST_FORMAT)
    answer = content_sync(make(), "dry-run")
    assert answer.status == 422, answer.body
    assert any(f["table"] == "event trigger tell_alter" and "pg_notify" in f["reason"] for f in answer.body["details"]["side_channels"])


def test_large_object_written_by_a_trigger(lms):
    make, dev, prod = lms
    with psycopg.connect(prod, autocommit=True) as conn:
        oid = conn.execute("select lo_from_bytea(0, 'user avatar')").fetchone()[0]
    trigger(prod, f"perform lo_put({oid}, 0, 'owned')")
    before = state(prod)
    body = refused(make())
    assert any("large object data written" in c for c in violation(body, "pg_catalog.pg_largeobject")["changes"])
    with psycopg.connect(prod) as conn:
        assert bytes(conn.execute(f"select lo_get({oid})").fetchone()[0]) == b"user avatar"
    assert state(prod) == before


@pytest.mark.parametrize(
    "body_sql",
    [
        "perform nextval('payments_id_seq')",
        # drawn and put back: the value looks unchanged, the lock remains
        "perform setval('payments_id_seq', nextval('payments_id_seq') - 1)",
        "begin perform nextval('payments_id_seq'); raise exception 'undo'; exception when others then null; end",
    ],
    ids=["nextval", "nextval then setval back", "inside a rolled back block"],
)
def test_a_protected_sequence_moved_by_a_trigger_is_named_not_ok(lms, body_sql):
    make, dev, prod = lms
    trigger(prod, body_sql)
    body = refused(make())
    assert any("not transactional" in c for c in violation(body, "payments_id_seq")["changes"])
    assert "except sequence values" in body["summary"]


def test_a_write_statement_that_counted_nothing_is_not_ok(lms):
    """A write the counters did not see (here: none at all) still holds its
    lock: the proof cannot vouch for it and refuses."""
    make, dev, prod = lms
    trigger(prod, "update users set display_name = 'x' where false")
    body = refused(make(), "dry-run")
    assert any("ROW EXCLUSIVE" in c for c in violation(body, "users")["changes"])


def test_a_cascade_that_reaches_no_protected_row_is_fine(lms):
    """delete_missing with ON DELETE CASCADE into a protected table whose
    rows do not reference the deleted content: RI runs its DELETE (and locks
    the table) but writes nothing — not a violation."""
    make, dev, prod = lms
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("delete from resources where lesson_id = 8; delete from lesson_progress where lesson_id = 8; delete from lessons where id = 8")
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("delete from lesson_progress where lesson_id = 8; delete from user_points_history where lesson_id = 8")
    answer = content_sync(make(extra=ACK + "\ndelete_missing = true"), "sync", adopt=True)
    assert answer.status == 200, answer.body
    assert answer.body["details"]["protection_proof"]["ok"]


def test_shadowing_the_catalog_through_search_path_does_not_fool_the_proof(lms):
    """A trigger puts its own schema before pg_catalog, with look-alikes of
    the functions and views the proof reads, then writes users."""
    make, dev, prod = lms
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            """
            create schema evil;
            create function evil.pg_stat_get_xact_tuples_updated(oid) returns bigint language sql as 'select 0::bigint';
            create view evil.pg_locks as select * from pg_catalog.pg_locks where false;
            create function evil.age(xid) returns integer language sql as 'select 1';
            """
        )
    trigger(prod, "set search_path = evil, pg_catalog, public; update users set display_name = 'owned'")
    before = state(prod)
    body = refused(make())
    assert violation(body, "users")["updated"] > 0
    assert state(prod) == before


def test_partitions_and_inheritance_between_content_and_protected(pg_server, make_db, write_settings):
    """Either direction, partition or inheritance: a config error naming both."""
    cases = {
        "protected partition": (
            "create table events (id int, kind text, primary key (id, kind)) partition by list (kind);"
            "create table events_public partition of events for values in ('public');"
            "create table events_users partition of events for values in ('user');",
            ["events"], ["events_users"], "events_users is a partition of content table public.events",
        ),
        "content partition of a protected table": (
            "create table events (id int, kind text, primary key (id, kind)) partition by list (kind);"
            "create table events_public partition of events for values in ('public');",
            ["events_public"], ["events"], "content table public.events_public is a partition of public.events",
        ),
        "inheritance child": (
            "create table lessons (id int primary key, title text); create table users () inherits (lessons);",
            ["lessons"], [], "public.users inherits from content table public.lessons",
        ),
        "inheritance parent": (
            "create table people (id int primary key, name text); create table authors () inherits (people);"
            "alter table authors add primary key (id);",
            ["authors"], ["people"], "content table public.authors is an inheritance child of public.people",
        ),
        "inheritance between two content tables": (
            "create table ev (id int primary key, title text); create table web (url text) inherits (ev);"
            "alter table web add primary key (id);",
            ["ev", "web"], [], "content table public.web is an inheritance child of content table public.ev",
        ),
        "foreign partition": (
            "create foreign data wrapper nowhere; create server far foreign data wrapper nowhere;"
            "create table events (id int, kind text) partition by list (kind);"
            "create foreign table events_far partition of events for values in ('far') server far;",
            ["events"], [], "is a foreign table: its rows live on another server",
        ),
        "protected view": (
            "create table lessons (id int primary key); create table users (id int primary key);"
            "create view users_view as select * from users;",
            ["lessons"], ["users_view"], "users_view is a view",
        ),
        "protected foreign table": (
            "create table lessons (id int primary key);"
            "create foreign data wrapper nowhere; create server far foreign data wrapper nowhere;"
            "create foreign table users (id int) server far;",
            ["lessons"], ["users"], "public.users is a foreign table",
        ),
    }
    for name, (schema, tables, protected, message) in cases.items():
        dev, prod = make_db(), make_db()
        for url in (dev, prod):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(schema)
        toml = f'[content_sync]\nsource = "dev"\ntarget = "prod"\ntables = {tables!r}\nprotected = {protected!r}\n'.replace("'", '"')
        answer = content_sync(write_settings({"dev": dev, "prod": prod}, toml), "dry-run")
        assert answer.status == 400 and message in answer.body["error"], (name, answer.body)


@pytest.fixture
def least_privileged(lms, pg_server):
    """prod reached as a role that may write only the content tables (and the ledger)."""
    import uuid

    make, dev, prod = lms
    role = f"lp_{uuid.uuid4().hex[:8]}"
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            f"""
            create role {role} login;
            grant connect on database "{dbname}" to {role};
            grant usage on schema public to {role};
            grant select on all tables in schema public to {role};
            grant select on all sequences in schema public to {role};
            grant insert, update on courses, lessons, resources, events, promotions, products, prices to {role};
            grant usage, update on all sequences in schema public to {role};
            create schema safesync; grant usage, create on schema safesync to {role};
            """
        )
    return role, pg_server.url(dbname, user=role, password=None), dev, prod


def test_a_role_that_could_write_protected_tables_is_reported(least_privileged, write_settings):
    role, url, dev, prod = least_privileged
    settings = write_settings({"dev": dev, "prod": url}, lms_config_toml())
    answer = content_sync(settings, "compare")
    assert answer.body["details"]["least_privilege"] == {"ok": True, "writable_protected": [], "definer_routes": []}
    assert not [w for w in answer.body["warnings"] if "can write protected" in w]
    strict = write_settings({"dev": dev, "prod": url}, lms_config_toml(extra="require_least_privilege = true"))
    grants = {  # (grant, the table it makes writable, undo)
        "column UPDATE": (f"grant update (email) on users to {role}", "users", f"revoke update (email) on users from {role}"),
        "TRUNCATE": (f"grant truncate on payments to {role}", "payments", f"revoke truncate on payments from {role}"),
        "TRIGGER": (f"grant trigger on enrollments to {role}", "enrollments", f"revoke trigger on enrollments from {role}"),
        "owner": (f"alter table user_streaks owner to {role}", "user_streaks", "alter table user_streaks owner to current_user"),
        "a writable view": (f"create view user_emails as select id, email from users; grant insert on user_emails to {role}", "user_emails", "drop view user_emails"),
    }
    for name, (grant, table, undo) in grants.items():
        with psycopg.connect(prod, autocommit=True) as conn:
            conn.execute(grant)
        for mode in ("compare", "dry-run", "sync"):
            answer = content_sync(settings, mode, adopt=mode != "compare")
            assert "warnings" in answer.body, (name, mode, answer.body)
            warned = [w for w in answer.body["warnings"] if "can write protected" in w]
            assert warned and table in warned[0] and "safesync roles sql" in warned[0], (name, mode)
            answer = content_sync(strict, mode, adopt=mode != "compare")
            assert answer.exit_code == 1 and "require_least_privilege" in answer.body["summary"], (name, mode)
            assert answer.status == (200 if mode == "compare" else 422), (name, mode)
            if mode == "sync":
                assert "safety_backup" not in answer.body["details"]
        with psycopg.connect(prod, autocommit=True) as conn:  # back to least privilege for the next case
            conn.execute(undo)


def test_a_change_the_past_cannot_name_is_still_refused(least_privileged, write_settings):
    """The second session that reads the catalog as it was cannot connect
    (the database's connection limit): the change is refused all the same,
    unnamed."""
    role, url, dev, prod = least_privileged
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(f"grant create on schema public to {role}")
    trigger(prod, "create table leaked (id int)")
    settings = write_settings({"dev": dev, "prod": url}, lms_config_toml(extra=ACK))
    with psycopg.connect(prod, autocommit=True) as conn:  # the job's own connections to prod: its lock and the sync's
        conn.execute(f'alter database "{dbname}" connection limit 2')
    try:
        body = refused(settings, "dry-run")
    finally:
        with psycopg.connect(prod, autocommit=True) as conn:
            conn.execute(f'alter database "{dbname}" connection limit -1')
    assert any("could not be named" in c for c in violation(body, "(catalog)")["changes"]), body["details"]["protection_proof"]
    with psycopg.connect(prod) as conn:
        assert conn.execute("select to_regclass('public.leaked')").fetchone()[0] is None


def test_inheritance_in_the_source_alone_is_a_config_error(make_db, write_settings):
    """Reading a parent includes its inheritance children's rows: a source
    whose content table has a child (prod has none) would push the child's
    rows into prod's table, and compare called the result identical."""
    dev, prod = make_db(), make_db()
    with psycopg.connect(dev) as conn:
        conn.execute("create table ev (id int primary key, title text); create table web (url text) inherits (ev);")
        conn.execute("insert into ev values (1, 'a'); insert into web values (2, 'w', 'u')")
    with psycopg.connect(prod) as conn:
        conn.execute("create table ev (id int primary key, title text)")
    answer = content_sync(write_settings({"dev": dev, "prod": prod}, '[content_sync]\ntables = ["ev"]\n'), "dry-run", adopt=True)
    assert answer.status == 400, answer.body
    assert "public.web inherits from content table public.ev in database 'dev'" in answer.body["error"]
