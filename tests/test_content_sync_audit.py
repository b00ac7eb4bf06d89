"""The static side-channel audit: code a sync would run on the target whose
effect the in-transaction proof cannot see is found before compare,
dry-run or sync execute anything — and the dry-run never runs it.

The attacks that need contrib (dblink, postgres_fdw) and PL/Python run on
a second server from Debian's packages (``tests/contrib.py`` installs them
when missing); the others on the suite's embedded server. Each attack is
also run once *acknowledged*, to show it is real: then the side channel does
run, and for dblink the write survives the dry-run's ROLLBACK with the
proof none the wiser."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from safesync.functions.content_sync import content_sync
from safesync.shared.embedded import EmbeddedPostgres
from tests import contrib
from tests.conftest import PgServer
from tests.fixtures.lms import lms_config_toml


def owned(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from users where display_name = 'owned'").fetchone()[0]


def findings(body: dict) -> list[dict]:
    return body["details"].get("side_channels", [])


def expect_refused(settings, prod: str, *, reason: str, table: str = "lessons") -> list[dict]:
    """compare reports the finding; dry-run and sync refuse it before running
    anything; nothing changed."""
    before = owned(prod)
    compare = content_sync(settings, "compare")
    assert compare.exit_code == 1 and compare.body["ok"] is False, compare.body
    found = [f for f in findings(compare.body) if f["table"] == table and reason in f["reason"] and not f["acknowledged"]]
    assert found, findings(compare.body)
    assert any(reason in row["reason"] for row in compare.body["tables"]["side channels"])
    for mode in ("dry-run", "sync"):
        answer = content_sync(settings, mode, adopt=True)
        assert answer.status == 422 and answer.exit_code == 1, answer.body
        assert "side channel" in answer.body["summary"] and table in answer.body["summary"]
        assert "safety_backup" not in answer.body["details"] and "protection_proof" not in answer.body["details"]
    assert owned(prod) == before
    return found


def trigger(url: str, body: str, *, language: str = "plpgsql", on: str = "lessons", extra: str = "") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"create or replace function attack() returns trigger language {language} {extra} as $$ {body} $$;"
            f"create trigger attack after update on {on} for each statement execute function attack()"
        )


# --- contrib: another connection, another server, another language -----------


@pytest.fixture(scope="session")
def contrib_server():
    """Debian's PostgreSQL with contrib and PL/Python, started for this session."""
    found = contrib.ensure()
    if isinstance(found, str):
        pytest.skip(f"side channels through contrib cannot be tested here: {found}")
    root = Path(tempfile.mkdtemp(prefix="safesync-contrib-pg-"))
    server = EmbeddedPostgres(root / "data", bin=found).start()
    try:
        yield PgServer(server.url(), server)
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def contrib_lms(contrib_server, write_settings):
    made = []

    def db(variant: str) -> str:
        url = contrib_server.create_database()
        made.append(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
        from tests.fixtures.lms import create_lms

        create_lms(url, variant=variant)
        return url

    dev, prod = db("dev"), db("prod")
    info = psycopg.conninfo.conninfo_to_dict(prod)
    back = f"host={info['host']} port={info['port']} dbname={info['dbname']} user=postgres"

    def settings(extra: str = ""):
        return write_settings({"dev": dev, "prod": prod}, lms_config_toml(extra=extra))

    yield settings, dev, prod, back
    for name in made:
        contrib_server.drop_database(name)


on_contrib = pytest.mark.xdist_group("contrib")  # one worker, one contrib server


@on_contrib
def test_dblink_write_back_is_found_and_never_run(contrib_lms):
    make, dev, prod, back = contrib_lms
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("create extension dblink")
    trigger(prod, f"begin perform dblink_exec('{back}', 'update users set display_name = ''owned'' where id in (select id from users limit 3)'); return null; end")
    [found] = expect_refused(make(), prod, reason="dblink")  # one call: one finding, whichever overload it resolves to
    assert found["via"] == "trigger attack → public.attack()" and found["function"].startswith("public.dblink_exec(text, ")
    # acknowledged, the dry-run runs it: the write is another connection's, it survives the ROLLBACK,
    # and the in-transaction proof cannot see it — which is why the audit refuses by default
    answer = content_sync(make('acknowledge_side_channels = ["lessons"]'), "dry-run", adopt=True)
    assert answer.status == 200 and answer.body["details"]["protection_proof"]["ok"], answer.body
    assert any("acknowledged side channel" in w for w in answer.body["warnings"])
    assert owned(prod) == 3


@on_contrib
def test_postgres_fdw_table_pointing_back_is_found(contrib_lms):
    make, dev, prod, back = contrib_lms
    options = ", ".join(f"{k} '{v}'" for k, v in (p.split("=") for p in back.split() if not p.startswith("user=")))
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            f"""
            create extension postgres_fdw;
            create server self foreign data wrapper postgres_fdw options ({options});
            create user mapping for public server self options (user 'postgres');
            create foreign table users_remote (id uuid, display_name text) server self options (schema_name 'public', table_name 'users');
            """
        )
    trigger(prod, "begin update users_remote set display_name = 'owned'; return null; end")
    [found] = expect_refused(make(), prod, reason="foreign table users_remote")
    assert "postgres_fdw" in found["reason"]
    # acknowledged: the proof still sees the local write to the foreign table and refuses; the
    # remote transaction is rolled back with ours
    answer = content_sync(make('acknowledge_side_channels = ["lessons"]'), "sync", adopt=True)
    assert answer.status == 422, answer.body
    assert any("foreign table" in c for v in answer.body["details"]["protection_proof"]["violations"] for c in v["changes"])
    assert owned(prod) == 0


@on_contrib
def test_a_trigger_in_plpython_cannot_be_read(contrib_lms):
    make, dev, prod, back = contrib_lms
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("create extension plpython3u")
    trigger(prod, "plpy.execute(\"update users set display_name = 'owned'\")", language="plpython3u")
    expect_refused(make(), prod, reason="written in plpython3u")


@on_contrib
def test_an_event_trigger_fired_by_the_syncs_own_ddl(contrib_lms):
    make, dev, prod, back = contrib_lms
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            f"""
            create extension dblink;
            create function watch() returns event_trigger language plpgsql as $$
            begin perform dblink_exec('{back}', 'update users set display_name = ''owned'' where id in (select id from users limit 2)'); end $$;
            create event trigger watch_ddl on ddl_command_end execute function watch();
            create event trigger only_extensions on ddl_command_end when tag in ('CREATE EXTENSION') execute function watch();
            """
        )
    found = expect_refused(make(), prod, reason="dblink", table="event trigger watch_ddl")
    assert not [f for f in found if "only_extensions" in f["table"]]  # does not fire on what the sync runs
    answer = content_sync(make('acknowledge_event_triggers = ["watch_ddl"]'), "dry-run", adopt=True)
    assert answer.status == 200, answer.body
    assert owned(prod) > 0  # it did fire on the sync's own CREATE TABLE: real, and now acknowledged


# --- the suite's own server ---------------------------------------------------------


def test_copy_to_program_is_found_and_the_dry_run_never_runs_it(lms):
    make, dev, prod = lms
    folder = Path(tempfile.mkdtemp(prefix="safesync-audit-"))
    folder.chmod(0o777)  # the server may run as another OS user
    marker = folder / "ran"
    try:
        trigger(prod, f"begin copy (select 1) to program 'cat > {marker}'; return null; end")
        expect_refused(make(), prod, reason="COPY")
        assert not marker.exists()
        answer = content_sync(make('acknowledge_side_channels = ["lessons"]'), "dry-run", adopt=True)
        assert answer.status == 200 and marker.exists()  # the program ran although the dry-run rolled back
        assert "it cannot see what the 1 acknowledged side channel(s) did" in answer.body["summary"]  # "ok" is not the whole truth
    finally:
        shutil.rmtree(folder, ignore_errors=True)


SIMPLE = {
    "SECURITY DEFINER": ("begin perform helper(); return null; end", "create function helper() returns void language sql security definer as 'select 1'", "SECURITY DEFINER"),
    "dynamic SQL": ("begin execute 'update users set display_name = ''owned'''; return null; end", "", "dynamic SQL"),
    "NOTIFY": ("begin notify users_changed, 'x'; return null; end", "", "NOTIFY"),
    "pg_notify": ("begin perform pg_notify('c', 'x'); return null; end", "", "pg_notify"),
    "SET LOCAL": ("begin set local track_counts = off; return null; end", "", "SET track_counts"),
    "SET CONSTRAINTS": ("begin set constraints all deferred; return null; end", "", "SET constraints"),
    "set_config": ("begin perform set_config('session_replication_role', 'replica', true); return null; end", "", "set_config"),
    "lo_export": ("begin perform lo_export(1, '/tmp/x'); return null; end", "", "lo_export"),
    "lo_put": ("begin perform lo_put(1, 0, 'x'); return null; end", "", "large object"),
    "DO block": ("begin do 'begin null; end'; return null; end", "", "DO"),
    "code created at run time": ("begin create or replace function later() returns int language sql as 'select 1'; return null; end", "", "installs or enables code"),
    "a disabled trigger enabled": ("begin alter table users enable trigger all; return null; end", "", "installs or enables code"),
    "nextval on a protected sequence": ("begin perform nextval('payments_id_seq'); return null; end", "", "not a content table's sequence"),
    "advisory lock": ("begin perform pg_advisory_lock(1); return null; end", "", "advisory lock"),
    "transitive": (
        "begin perform step_one(); return null; end",
        "create function step_two() returns void language plpgsql as $f$ begin perform pg_notify('c', 'x'); end $f$;"
        "create function step_one() returns void language sql as 'select step_two()'",
        "pg_notify",
    ),
    "through another table's trigger": (
        "begin insert into audit_log values (1); return null; end",
        "create table audit_log (id int);"
        "create function audit_notify() returns trigger language plpgsql as $f$ begin perform pg_notify('c', 'x'); return null; end $f$;"
        "create trigger audit_notify after insert on audit_log for each row execute function audit_notify()",
        "pg_notify",
    ),
    "a custom operator": (
        "begin if 1 ### 2 then null; end if; return null; end",
        "create function hashes(int, int) returns boolean language plpgsql as $f$ begin perform pg_notify('c', 'x'); return true; end $f$;"
        "create operator ### (leftarg = int, rightarg = int, function = hashes)",
        "pg_notify",
    ),
    "a function's SET clause": ("begin perform quiet(); return null; end", "create function quiet() returns void language sql set track_counts = off as 'select 1'", "sets track_counts=off"),
    "another language": (
        "begin return null; end",
        "create language fakepl handler plpgsql_call_handler",
        "written in fakepl",
    ),
}


@pytest.mark.parametrize("case", SIMPLE, ids=list(SIMPLE))
def test_side_channels_in_trigger_code(lms, case):
    make, dev, prod = lms
    body, setup, reason = SIMPLE[case]
    if setup:
        with psycopg.connect(prod, autocommit=True) as conn:
            conn.execute(setup)
    trigger(prod, body, language="fakepl" if case == "another language" else "plpgsql")
    [found, *_] = expect_refused(make(), prod, reason=reason)
    assert found["via"].startswith("trigger attack")


def test_side_channels_outside_trigger_bodies(lms):
    """Rules, column defaults, CHECK constraints, the ledger's triggers, a
    partition's trigger, a table an FK action reaches."""
    make, dev, prod = lms
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute("create function noisy() returns boolean language plpgsql as $f$ begin perform pg_notify('c', 'x'); return true; end $f$")
    cases = [
        ("create rule tell as on update to lessons do also notify lessons_changed", "lessons", "NOTIFY"),
        ("alter table courses alter column description set default (case when noisy() then 'x' end)", "courses", "pg_notify"),
        ("alter table products add constraint loud check (noisy())", "products", "pg_notify"),
        (
            "create function progress_gone() returns trigger language plpgsql as $f$ begin notify progress; return null; end $f$;"
            "create trigger progress_gone after delete on lesson_progress for each statement execute function progress_gone()",
            "lessons",  # lesson_progress is reached by ON DELETE CASCADE from lessons: it counts for lessons
            "NOTIFY",
        ),
    ]
    for setup, table, reason in cases:
        with psycopg.connect(prod, autocommit=True) as conn:
            conn.execute(setup)
        found = expect_refused(make(), prod, reason=reason, table=table)
        if "lesson_progress" in setup:
            assert found[0]["via"] == "FK action → table lesson_progress → trigger progress_gone"
        with psycopg.connect(prod, autocommit=True) as conn:  # one at a time
            conn.execute(
                "drop rule if exists tell on lessons; alter table courses alter column description drop default;"
                "alter table products drop constraint if exists loud; drop trigger if exists progress_gone on lesson_progress"
            )
    assert content_sync(make(), "sync", adopt=True).status == 200  # clean again; creates the ledger
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            "create function ledger_tell() returns trigger language plpgsql as $f$ begin notify ledger; return null; end $f$;"
            "create trigger ledger_tell after insert or update on safesync.content_ledger for each statement execute function ledger_tell()"
        )
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute("update lessons set title = title || '!' where id = 1")
    expect_refused(make(), prod, reason="NOTIFY", table="safesync.content_ledger")


def test_a_policy_side_channel_stops_even_compare(lms, pg_server):
    """A policy's function runs on every read: compare must not read."""
    make, dev, prod = lms
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            "create function peek() returns boolean language plpgsql as $f$ begin perform pg_notify('c', 'read'); return true; end $f$;"
            "alter table lessons enable row level security; create policy peek on lessons using (peek())"
        )
    answer = content_sync(make(), "compare")
    assert answer.exit_code == 1 and "compare stopped before reading the target" in answer.body["summary"]
    assert "tables" not in answer.body["tables"]  # no table was compared


def test_common_harmless_triggers_are_no_finding(lms):
    """updated_at stamps, built-in trigger functions, defaults drawing from
    the table's own sequence, a trigger maintaining another content table,
    a disabled trigger: nothing to report."""
    make, dev, prod = lms
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(
            """
            create function stamp() returns trigger language plpgsql as $f$
            begin new.updated_at := now(); -- set local track_counts = off (a comment is not code)
              raise notice 'execute % set', 'copy'; return new; end $f$;
            create trigger stamp before update on lessons for each row execute function stamp();
            create trigger same before update on courses for each row execute function suppress_redundant_updates_trigger();
            create function touch_course() returns trigger language plpgsql as $f$
            begin update courses set title = title where id = new.course_id and false; return null; end $f$;
            create trigger touch after update on lessons for each row execute function touch_course();
            create function loud() returns trigger language plpgsql as $f$ begin perform pg_notify('c', 'x'); return null; end $f$;
            create trigger off_duty after update on lessons for each row execute function loud();
            alter table lessons disable trigger off_duty;
            create function own_sequence() returns trigger language plpgsql as $f$ begin perform nextval('products_id_seq'); return new; end $f$;
            create trigger own_sequence before insert on products for each row execute function own_sequence();
            """
        )
    answer = content_sync(make(), "compare")
    assert answer.status == 200 and findings(answer.body) == [], findings(answer.body)
    assert "side channels" not in answer.body["tables"]


def test_a_call_hidden_by_backslash_quoting_is_found(lms):
    """On a database (or for a role) with standard_conforming_strings = off,
    a session compiles trigger bodies the old way: ``'\\''`` is one quote and
    the pg_notify after it is code — the sync's session runs it. The audit
    read only the default way, saw a string running over the call, and found
    nothing. Read both ways, it is refused."""
    make, dev, prod = lms
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(f'alter database "{dbname}" set standard_conforming_strings = off')
    with psycopg.connect(prod, autocommit=True) as conn:  # a new session: the body is checked as the database lexes it
        assert conn.execute("show standard_conforming_strings").fetchone()[0] == "off"
        conn.execute(
            "create function attack() returns trigger language plpgsql as $$ declare q text := '\\''; "
            "begin perform pg_notify('c', 'x'); return null; end $$;"
            "create trigger attack after update on lessons for each statement execute function attack()"
        )
    [found, *_] = expect_refused(make(), prod, reason="pg_notify")
    assert found["via"].startswith("trigger attack")
