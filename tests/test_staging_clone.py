"""Staging clone on the Supabase-like fixture: exact, atomic, proven.

Every test builds on fresh copies of the dev database and of an out-of-date
staging (``tests/fixtures/supabase.py``) and checks the outcome on real
PostgreSQL: catalog descriptions and content fingerprints before and after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import psycopg
import psycopg.sql
import pytest

from safesync.functions import cli
from safesync.functions.staging_clone import clone
from safesync.functions.validate import validate
from safesync.functions.validate.catalog import describe_schema
from safesync.shared.db import connect, database_fingerprint
from tests.fixtures.supabase import TENANTS, supabase_dev, supabase_staging, supabase_templates, visible_rows  # noqa: F401

SCHEMAS = ["public", "hotels"]
CLONE_TOML = """
[staging_clone]
source = "dev"
target = "staging"
schemas = ["public", "hotels"]
"""
RLS_QUERIES = [
    "select tenant_id, slug, nombre_comercial from public.tenant_registry",
    "select id, name, status::text from hotels.accommodation_units",
    "select conversation_id, content from public.chat_messages",
    "select title from hotels.policies",
    "select id, label from public.active_units",
    "select feed_url from public.ics_feed_configurations",
    "select parent_unit_id, child_unit_id from public.property_relationships",
]


def state(url: str) -> tuple[dict, dict]:
    """Everything a clone could change: catalog description + row hashes."""
    with connect(url) as conn:
        return describe_schema(conn, SCHEMAS), database_fingerprint(conn, SCHEMAS)


@pytest.fixture
def settings(write_settings, supabase_dev, supabase_staging):
    return write_settings({"dev": supabase_dev, "staging": supabase_staging, "prod": supabase_dev}, CLONE_TOML)


def test_clone_makes_staging_identical_and_rls_behaves_the_same(settings, supabase_dev, supabase_staging):
    with psycopg.connect(supabase_staging) as conn:
        assert conn.execute("select to_regclass('public.legacy_bookings')").fetchone()[0] is not None

    answer = clone(settings)

    body = answer.body
    assert answer.exit_code == 0, body
    assert body["status"] == "ok" and body["details"]["identical"] is True
    assert "identical" in body["summary"]
    assert body["details"]["plan"]["tables_dropped"] == ["public.legacy_bookings"]
    assert set(body["details"]["plan"]["tables_created"]) == {"hotels.policies", "public.sire_content"}
    assert body["tables"]["schema differences"] == [] and body["tables"]["data differences"] == []
    assert {"publications", "publication tables", "event triggers", "default_privileges"} <= set(body["details"]["comparison"]["compared_kinds"])
    assert {row["kind"] for row in body["tables"]["not compared"]} >= {"roles and memberships (cluster-wide)"}
    # the safety backup of staging exists and is complete (manifest written)
    backup = body["details"]["safety_backup"]
    assert backup["id"].startswith("staging-") and settings.storage.exists(backup["dump_key"])
    # nothing extra left behind
    with psycopg.connect(supabase_staging) as conn:
        assert conn.execute("select to_regclass('public.legacy_bookings')").fetchone()[0] is None
    assert state(supabase_staging) == state(supabase_dev)

    # an independent validate --against agrees
    check = validate(settings, "staging", against="dev")
    assert check.exit_code == 0 and "identical" in check.body["summary"]

    # RLS: a PostgREST-like authenticated user sees exactly the same rows
    for tenant in TENANTS:
        on_dev, on_staging = visible_rows(supabase_dev, tenant, RLS_QUERIES), visible_rows(supabase_staging, tenant, RLS_QUERIES)
        assert on_dev == on_staging
        assert on_dev[RLS_QUERIES[0]] and len(on_dev[RLS_QUERIES[0]]) == 1  # policies filter, not empty
    with psycopg.connect(supabase_staging) as conn:
        total = conn.execute("select count(*) from public.chat_messages").fetchone()[0]
    assert 0 < len(on_staging[RLS_QUERIES[2]]) < total


def test_clone_with_a_failing_object_leaves_staging_exactly_as_before(settings, supabase_dev, supabase_staging):
    # A real-world restore failure: an index on a function whose body relies on
    # search_path (pg_dump restores with an empty one). It is built after all
    # tables were dropped, recreated and loaded — half-way through the swap.
    with psycopg.connect(supabase_dev, autocommit=True) as conn:
        conn.execute(
            "create function public.tenant_units(t uuid) returns bigint language sql immutable as "
            "'select count(*) from accommodation_units_manual where tenant_id = t'"
        )
        conn.execute("create index conv_units_idx on public.chat_conversations (public.tenant_units(tenant_id))")
    before = state(supabase_staging)

    answer = clone(settings)

    # it would fail the same way every time: a refusal, not a retryable failure
    assert answer.exit_code == 1 and answer.status == 422 and answer.permanent
    report = answer.body["report"]
    assert report["status"] == "refused" and "rolled back" in answer.body["error"]
    assert "accommodation_units_manual" in answer.body["error"]  # the server's own words, not just an exit code
    assert "accommodation_units_manual" in json.dumps(answer.body["detail"])
    assert state(supabase_staging) == before
    assert settings.storage.exists(report["details"]["safety_backup"]["dump_key"])  # taken before the swap


SLOW_OBJECT = """
create function public.slow_key(i integer) returns integer language plpgsql immutable as $$
begin
  if current_setting('safesync_test.slow', true) = 'on' then perform pg_sleep(0.1); end if;
  return i;
end $$;
create table public.slow_table (id integer primary key);
insert into public.slow_table select generate_series(1, 300);
create index slow_idx on public.slow_table (public.slow_key(id));
"""


def _restore_backends(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "select pid from pg_stat_activity where application_name = 'safesync-clone-restore' "
                "and datname = current_database()"
            )
        ]


def _wait_until_sleeping(url: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> int:
    """pid of the restore backend once it is building the slow index (all
    tables already dropped, recreated and loaded in its transaction)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select pid from pg_stat_activity where application_name = 'safesync-clone-restore' "
                "and wait_event = 'PgSleep' and datname = current_database()"
            ).fetchone()
            if row:
                return row[0]
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"clone ended early: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.05)
    raise AssertionError("the restore never reached the slow index")


def _wait_gone(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _restore_backends(url):
        assert time.monotonic() < deadline, "restore backend still alive"
        time.sleep(0.1)


def _make_slow(dev: str, staging: str) -> None:
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute(SLOW_OBJECT)
    with psycopg.connect(staging, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("alter database {} set safesync_test.slow = on").format(psycopg.sql.Identifier(conn.info.dbname)))


def test_killing_the_clone_process_mid_restore_leaves_staging_as_before(settings, supabase_dev, supabase_staging):
    _make_slow(supabase_dev, supabase_staging)
    before = state(supabase_staging)
    proc = subprocess.Popen(
        [sys.executable, "-m", "safesync.functions.cli", "staging", "clone", "--json"],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_until_sleeping(supabase_staging, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    _wait_gone(supabase_staging)
    assert state(supabase_staging) == before


def test_lost_connection_mid_restore_fails_cleanly(settings, supabase_dev, supabase_staging):
    import threading

    _make_slow(supabase_dev, supabase_staging)
    before = state(supabase_staging)
    result = {}
    worker = threading.Thread(target=lambda: result.update(answer=clone(settings)))
    worker.start()
    pid = _wait_until_sleeping(supabase_staging)
    with psycopg.connect(supabase_staging, autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(%s)", [pid])
    worker.join(60)
    answer = result["answer"]
    assert answer.exit_code == 1 and answer.body["report"]["status"] == "failed"
    _wait_gone(supabase_staging)
    assert state(supabase_staging) == before


def test_masks_and_structure_only_tables(write_settings, supabase_dev, supabase_staging):
    settings = write_settings(
        {"dev": supabase_dev, "staging": supabase_staging, "prod": supabase_dev},
        CLONE_TOML
        + """exclude_table_data = ["chat_messages"]

[[staging_clone.mask]]
table = "chat_conversations"
column = "guest_email"
strategy = "hash"
value = "@example.invalid"

[[staging_clone.mask]]
table = "chat_conversations"
column = "guest_name"
strategy = "null"

[[staging_clone.mask]]
table = "tenant_registry"
column = "nombre_comercial"
strategy = "fixed"
value = "Hotel Demo"
""",
    )
    answer = clone(settings)
    body = answer.body
    assert answer.exit_code == 0, body
    masked = {(r["kind"], r.get("columns")) for r in body["tables"]["not compared"] if r["kind"].startswith("columns of")}
    assert masked == {
        ("columns of public.chat_conversations", "guest_email, guest_name"),
        ("columns of public.tenant_registry", "nombre_comercial"),
    }
    assert {"kind": "data of public.chat_messages", "compared": "no (structure only)"} in body["tables"]["not compared"]
    with psycopg.connect(supabase_staging) as s, psycopg.connect(supabase_dev) as d:
        emails = s.execute("select guest_email, guest_name from public.chat_conversations order by id").fetchall()
        originals = d.execute("select guest_email from public.chat_conversations order by id").fetchall()
        assert all(e.endswith("@example.invalid") and n is None for e, n in emails)
        assert len({e for e, _ in emails}) == len(originals)  # hashing keeps distinct values distinct
        assert not {e for e, _ in emails} & {o for (o,) in originals}
        assert {r[0] for r in s.execute("select nombre_comercial from public.tenant_registry")} == {"Hotel Demo"}
        assert s.execute("select count(*) from public.chat_messages").fetchone()[0] == 0
        # triggers were switched off for masking and put back exactly
        triggers = "select tgname, tgenabled from pg_trigger where not tgisinternal order by 1"
        assert s.execute(triggers).fetchall() == d.execute(triggers).fetchall()
        # masking did not fire the updated_at trigger
        assert s.execute("select count(*) from public.tenant_registry where updated_at is not null").fetchone()[0] == 0


def test_dry_run_changes_nothing_and_shows_the_plan(settings, supabase_staging, tmp_path, capsys):
    before = state(supabase_staging)
    code = cli.main(["staging", "clone", "--dry-run", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 0 and body["action"] == "dry-run"
    assert {"table": "public.legacy_bookings", "action": "drop"} in body["tables"]["tables"]
    assert any(r["object"] == "public.legacy_bookings" for r in body["tables"]["schema differences"])
    assert state(supabase_staging) == before
    assert not settings.storage.list("staging/")  # no backup for a dry run


def test_refuses_when_the_drop_would_cascade_outside_the_schemas(settings, supabase_staging):
    with psycopg.connect(supabase_staging, autocommit=True) as conn:
        conn.execute("create schema reporting")
        conn.execute("create view reporting.tenants as select slug from public.tenant_registry")
    before = state(supabase_staging)
    answer = clone(settings)
    assert answer.status == 422 and answer.exit_code == 1
    assert "view reporting.tenants" in answer.body["error"]
    assert state(supabase_staging) == before
    with psycopg.connect(supabase_staging) as conn:
        assert conn.execute("select to_regclass('reporting.tenants')").fetchone()[0] is not None
    # the dump started while planning (engine.Dump) is gone with the refusal: no pg_dump left on the source
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "pg_dump"]


def test_refuses_masks_that_cannot_apply(write_settings, supabase_dev, supabase_staging):
    settings = write_settings(
        {"dev": supabase_dev, "staging": supabase_staging, "prod": supabase_dev},
        CLONE_TOML + '\n[[staging_clone.mask]]\ntable = "chat_messages"\ncolumn = "content"\nstrategy = "null"\n'
        '\n[[staging_clone.mask]]\ntable = "chat_messages"\ncolumn = "nope"\nstrategy = "hash"\n',
    )
    answer = clone(settings)
    assert answer.status == 422
    assert "NOT NULL" in answer.body["error"] and "chat_messages.nope does not exist" in answer.body["error"]


@pytest.mark.parametrize("extra, expected", [
    ('exclude_table_data = ["tenant_registry"]\n',
     "rows of hotels.accommodation_units (accommodation_units_tenant_id_fkey)"),
    ('[[staging_clone.mask]]\ntable = "hotels.accommodation_units"\ncolumn = "tenant_id"\nstrategy = "hash"\n',
     "hotels.accommodation_units.tenant_id is part of foreign key(s) accommodation_units_tenant_id_fkey"),
    ('[[staging_clone.mask]]\ntable = "tenant_registry"\ncolumn = "tenant_id"\nstrategy = "hash"\n',
     "public.tenant_registry.tenant_id is part of foreign key(s)"),
    ('[[staging_clone.mask]]\ntable = "tenant_registry"\ncolumn = "slug"\nstrategy = "fixed"\nvalue = "demo"\n',
     "public.tenant_registry.slug is in unique index"),
], ids=["excluded parent", "masked reference", "masked referenced key", "fixed unique"])
def test_what_would_break_a_key_is_refused_while_planning(write_settings, supabase_dev, supabase_staging, extra, expected):
    """Not after copying, as the FK or unique check's error: nothing is written, not even the safety backup."""
    settings = write_settings({"dev": supabase_dev, "staging": supabase_staging, "prod": supabase_dev}, CLONE_TOML + extra)
    before = state(supabase_staging)
    answer = clone(settings)
    assert answer.status == 422 and answer.body["error"].startswith("staging clone refused:") and expected in answer.body["error"], answer.body["error"]
    assert "safety_backup_s" not in answer.body["report"]["timings"]
    assert state(supabase_staging) == before


def test_http_staging_clone(settings, supabase_staging):
    from safesync.functions.serve import create_app

    client = create_app().test_client()
    auth = {"Authorization": f"Bearer {os.environ['SAFESYNC_API_TOKEN']}"}
    bad = client.post("/staging_clone", json={"dry_run": "maybe"}, headers=auth)
    assert bad.status_code == 400 and "dry_run" in bad.get_json()["error"]
    assert client.post("/staging_clone", json={"mode": "x"}, headers=auth).status_code == 400
    before = state(supabase_staging)
    for lax in ("no", 0, "false"):  # never read as "not a dry run"
        assert client.post("/staging_clone", json={"dry_run": lax}, headers=auth).status_code == 400
    assert state(supabase_staging) == before
    ok = client.post("/staging_clone", json={"dry_run": True}, headers=auth)
    assert ok.status_code == 200 and ok.get_json()["action"] == "dry-run"
    assert state(supabase_staging) == before


def test_mask_on_a_column_a_generated_column_reads_is_refused_before_writing(write_settings, supabase_dev, supabase_staging):
    with psycopg.connect(supabase_dev, autocommit=True) as conn:
        conn.execute(
            "alter table public.chat_conversations add column guest_domain text generated always as (split_part(guest_email, '@', 2)) stored"
        )
    toml = CLONE_TOML + '\n[[staging_clone.mask]]\ntable = "chat_conversations"\ncolumn = "guest_email"\nstrategy = "hash"\n'
    settings = write_settings({"dev": supabase_dev, "staging": supabase_staging}, toml)
    before = state(supabase_staging)

    answer = clone(settings)

    assert answer.status == 422 and answer.permanent
    assert "public.chat_conversations.guest_domain are computed from public.chat_conversations.guest_email" in answer.body["error"]
    assert state(supabase_staging) == before
    assert "safety_backup" not in answer.body["report"]["details"]  # refused in planning, before anything


def test_event_triggers_and_publication_filters_on_cloned_objects_are_carried_over_twice(settings, supabase_dev, supabase_staging):
    # as a superuser (the embedded server): an event trigger calling a function
    # in a cloned schema, and a publication with a column list and a row filter
    with psycopg.connect(supabase_dev, autocommit=True) as conn:
        conn.execute("create function public.note_ddl() returns event_trigger language plpgsql as $$ begin null; end $$")
        conn.execute("create event trigger note_ddl on ddl_command_end when tag in ('CREATE TABLE') execute function public.note_ddl()")
        conn.execute("alter event trigger note_ddl disable")
        conn.execute("create publication app_changes for table public.tenant_registry (tenant_id, slug) where (is_active)")
    try:
        for _ in range(2):
            answer = clone(settings)
            assert answer.exit_code == 0 and answer.body["details"]["identical"], answer.body.get("error") or answer.body["tables"]
        with psycopg.connect(supabase_staging) as conn:
            assert conn.execute("select evtenabled::text, evttags from pg_event_trigger where evtname = 'note_ddl'").fetchone() == ("D", ["CREATE TABLE"])
            assert conn.execute(
                "select pg_get_expr(prqual, prrelid) from pg_publication_rel r join pg_publication p on p.oid = r.prpubid where p.pubname = 'app_changes'"
            ).fetchone() == ("is_active",)
    finally:  # event triggers and publications are database-wide: leave none behind
        for url in (supabase_dev, supabase_staging):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("drop event trigger if exists note_ddl")
                conn.execute("drop publication if exists app_changes")


PARENT_OUTSIDE = "create table other.events (id int, at date) partition by range (at)"
PARTITION_INSIDE = "create table public.events_2024 partition of other.events for values from ('2024-01-01') to ('2025-01-01')"


@pytest.mark.parametrize(
    "dev_sql, staging_sql, expected",
    [
        ([PARENT_OUTSIDE, PARTITION_INSIDE, "insert into other.events values (1, '2024-05-01')"], [PARENT_OUTSIDE],
         "public.events_2024 is a partition of other.events, outside the cloned schemas: cloning it would attach it there"),
        (["create table public.events (id int, at date) partition by range (at)",
          "create table other.events_2024 partition of public.events for values from ('2024-01-01') to ('2025-01-01')",
          "insert into public.events values (1, '2024-05-01')"], [],
         "public.events has a partition outside the cloned schemas, other.events_2024: its rows would not be cloned"),
        (["create table other.log (id int)", "create table public.log_2024 () inherits (other.log)"], ["create table other.log (id int)"],
         "public.log_2024 is an inheritance child of other.log"),
        ([PARENT_OUTSIDE], [PARENT_OUTSIDE, PARTITION_INSIDE, "insert into other.events values (7, '2024-05-01')"],
         "on the target, public.events_2024 is a partition of other.events, outside the cloned schemas: replacing it would take its rows out of other.events"),
    ],
    ids=["partition-inside-parent-outside", "partition-outside-parent-inside", "inheritance-child-inside", "target-partition-inside"],
)
def test_inheritance_across_the_schemas_is_refused_while_planning(make_db, write_settings, dev_sql, staging_sql, expected):
    """Before: the clone attached dev's partition to staging's table outside
    the cloned schemas (which gained its rows), left out rows of a partition
    outside, and dropping staging's partition took its rows out of a parent
    outside — each reported "identical"."""
    dev, staging = make_db(), make_db()
    for url, statements in ((dev, dev_sql), (staging, staging_sql)):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create schema other")
            for statement in statements:
                conn.execute(statement)
    with connect(staging) as conn:
        before = describe_schema(conn, ["public", "other"]), database_fingerprint(conn, ["public", "other"])
    answer = clone(write_settings({"dev": dev, "staging": staging}, CLONE_TOML.replace('"public", "hotels"', '"public"')))
    assert answer.status == 422 and answer.exit_code == 1, answer.body
    assert expected in answer.body["error"]
    with connect(staging) as conn:
        assert (describe_schema(conn, ["public", "other"]), database_fingerprint(conn, ["public", "other"])) == before
