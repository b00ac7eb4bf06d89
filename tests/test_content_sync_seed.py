"""Seeding the ledger in bulk (``content_sync.seed``): the key dropped,
the entries inserted, the same key added back — only where nobody can tell,
and the proof holds either way (real PostgreSQL, the LMS fixture)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from safesync.functions.content_sync import content_sync, seed
from tests.fixtures.lms import LMS_CONTENT
from tests.test_content_sync_ledger import execute, fingerprints, table_entries

KEY = "CREATE UNIQUE INDEX content_ledger_pkey ON safesync.content_ledger USING btree (entry)"


@pytest.fixture
def always(monkeypatch):
    """Bulk seeding worth it whatever the size (the fixture's tables are small)."""
    monkeypatch.setattr(seed, "worth_it", lambda rows, others: True)


def key_of(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        conn.execute("set search_path = pg_catalog")
        return [r[0] for r in conn.execute("select pg_get_indexdef(indexrelid) from pg_index where indrelid = 'safesync.content_ledger'::regclass")]


def bulk(body: dict) -> dict[str, bool]:
    return {name: done.get("bulk", False) for name, done in body["details"]["ledger"].items()}


def stale(url: str, table: str) -> None:
    """Make a table's summary of another signature: the next sync re-seeds it from nothing kept."""
    execute(url, f"update safesync.content_ledger set summary = jsonb_set(summary, '{{signature}}', '\"other\"') where summary->>'table' = 'public.{table}'")


def test_worth_it_only_for_many_entries_that_outnumber_the_rest():
    assert not seed.worth_it(seed.MIN_ROWS - 1, 0)
    assert seed.worth_it(seed.MIN_ROWS, seed.MIN_ROWS)
    assert not seed.worth_it(seed.MIN_ROWS, seed.MIN_ROWS + 1)


def test_a_bulk_seed_leaves_the_ledger_as_a_row_by_row_one(lms, always):
    make, dev, prod = lms
    answer = content_sync(make(), "sync", adopt=True)
    assert answer.status == 200, answer.body
    assert answer.body["details"]["protection_proof"]["ok"] and all(bulk(answer.body).values()), answer.body["details"]["ledger"]
    assert key_of(prod) == [KEY]
    with psycopg.connect(prod) as conn:
        for table in LMS_CONTENT:
            assert table_entries(conn, table) == conn.execute(f"select count(*) from {table}").fetchone()[0]
    again = content_sync(make(), "sync").body
    assert "already in sync" in again["summary"] and again["details"]["ledger"] == {}  # the summaries match the entries
    execute(prod, "update lessons set title = 'Prod hotfix' where id = 3")
    execute(dev, "update lessons set title = 'Dev edit' where id = 3")
    refused = content_sync(make(), "sync")  # the seeded ancestor tells a production edit from a dev one
    assert refused.status == 422 and "conflict" in refused.body["summary"]


def ledger_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("select entry, row_hash, kept, declined_hash from safesync.content_ledger where entry >= 0 order by entry").fetchall()


def test_a_first_sync_hashes_the_target_once_and_seeds_what_hashing_after_the_writes_gives(lms, always, monkeypatch):
    """The compare's first pass on the target and the seed read one staged
    hash per row; the sync's own writes are not taken from it: the ledger
    is the one hashing the target after the writes gives."""
    make, dev, prod = lms
    execute(dev, "update lessons set title = title || ' (dev)' where id % 3 = 0", "delete from resources where ctid in (select ctid from resources limit 2)")
    execute(prod, "update courses set description = 'prod only' where id = 1")  # a row the sync adopts from dev
    answer = content_sync(make(), "sync", adopt=True)
    assert answer.status == 200, answer.body
    details = answer.body["details"]
    assert all(c["target_hashed_once"] for c in details["compare"].values()) and answer.body["timings"]["stage_s"] > 0
    assert details["ledger"]["lessons"]["entries_written"] > 0  # written rows are recorded from the writes, not the stage
    staged = ledger_rows(prod)
    for table in LMS_CONTENT:
        stale(prod, table)
    monkeypatch.setattr(seed, "stage", lambda conn, spec, index: None)
    again = content_sync(make(), "sync")
    assert again.status == 200 and not any(c["target_hashed_once"] for c in again.body["details"]["compare"].values()), again.body
    assert all(done["reseeded"] > 0 for done in again.body["details"]["ledger"].values())
    assert ledger_rows(prod) == staged


def test_a_trigger_rewriting_other_rows_in_a_staged_first_sync_is_caught(lms, always):
    """The staged hashes are those of the rows before the writes: a trigger
    that changes a row the sync did not write makes the sync roll back, so
    no ledger entry is ever taken from a stale hash."""
    make, dev, prod = lms
    execute(dev, "update lessons set title = 'edited' where id = 9")
    rows = []
    for url in (dev, prod):
        with psycopg.connect(url) as conn:
            rows.append(set(conn.execute("select id, l::text from lessons as l").fetchall()))
    other = min(i for i, _ in rows[0] & rows[1])  # a lesson equal on both sides: the sync leaves it alone
    execute(
        prod,
        f"""
        create function touch_other() returns trigger language plpgsql as $$
        begin
          if pg_trigger_depth() = 1 then update lessons set duration_minutes = duration_minutes + 1 where id = {other}; end if;
          return new;
        end $$;
        create trigger lessons_touch after update on lessons for each row execute function touch_other();
        """,
    )
    before = fingerprints(prod)
    answer = content_sync(make(), "sync", adopt=True)
    assert answer.status == 422 and answer.permanent and "trigger or cascade" in answer.body["summary"], answer.body
    assert answer.body["details"]["compare"]["lessons"]["target_hashed_once"]
    assert fingerprints(prod) == before


def test_a_role_that_may_not_create_temporary_tables_hashes_the_table_again(lms, always, pg_server):
    """No TEMPORARY privilege: nothing is staged, the compare and the seed
    each hash the table, and the sync runs as before."""
    make, dev, prod = lms
    assert content_sync(make(), "sync", adopt=True).status == 200  # as the owner: the ledger exists now
    stale(prod, "lessons")
    role = f"cs_notemp_{uuid.uuid4().hex[:8]}"
    dbname = psycopg.conninfo.conninfo_to_dict(prod)["dbname"]
    execute(
        prod,
        f"revoke temporary on database {dbname} from public",
        f"create role {role} login",
        f"grant connect on database {dbname} to {role}",
        f"grant pg_read_all_data to {role}",
        f"grant usage on schema public, safesync to {role}",
        f"grant insert, update on {', '.join(LMS_CONTENT)} to {role}",
        f"grant usage, select, update on all sequences in schema public to {role}",
        f"grant select, insert, update, delete on safesync.content_ledger to {role}",
    )
    try:
        limited = make(urls={"dev": dev, "prod": pg_server.url(dbname, user=role, password=None)})
        answer = content_sync(limited, "sync")
        assert answer.status == 200, answer.body
        assert not answer.body["details"]["compare"]["lessons"]["target_hashed_once"]
        assert answer.body["details"]["ledger"]["lessons"]["reseeded"] > 0
        assert "already in sync" in content_sync(make(), "sync").body["summary"]  # the re-seeded summary matches
    finally:
        execute(prod, f"drop owned by {role}", f"grant temporary on database {dbname} to public")
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute(f"drop role {role}")


def test_keys_sharing_an_entry_keep_one_in_a_bulk_seed(lms, always, monkeypatch):
    from safesync.functions.content_sync import ledger

    monkeypatch.setattr(ledger, "KEY_BITS", 4)
    monkeypatch.setattr(ledger, "MASK", 15)
    make, dev, prod = lms
    answer = content_sync(make(), "sync", adopt=True)
    assert answer.status == 200 and all(bulk(answer.body).values()), answer.body
    assert key_of(prod) == [KEY]
    with psycopg.connect(prod) as conn:
        assert table_entries(conn, "lessons") <= 16 < conn.execute("select count(*) from lessons").fetchone()[0]


def test_an_event_trigger_on_alter_table_keeps_the_seed_row_by_row(lms, always):
    """Its code would run inside the sync, unaudited: the DDL is not run."""
    make, dev, prod = lms
    execute(
        prod,
        "create function refuse() returns event_trigger language plpgsql as $$ begin raise exception 'ALTER TABLE ran'; end $$",
        "create event trigger no_alter on ddl_command_end when tag in ('ALTER TABLE') execute function refuse()",
    )
    answer = content_sync(make(), "sync", adopt=True)
    assert answer.status == 200, answer.body
    assert not any(bulk(answer.body).values()) and key_of(prod) == [KEY]


def test_a_reader_holding_the_ledger_keeps_the_seed_row_by_row(lms, always):
    """A compare reading the ledger meanwhile: the sync neither waits for it nor fails."""
    make, dev, prod = lms
    assert content_sync(make(), "sync", adopt=True).status == 200
    stale(prod, "lessons")
    with psycopg.connect(prod) as reader:
        reader.execute("select count(*) from safesync.content_ledger")  # holds ACCESS SHARE until it ends
        answer = content_sync(make(), "sync")
    assert answer.status == 200, answer.body
    assert bulk(answer.body) == {"lessons": False} and answer.body["details"]["ledger"]["lessons"]["reseeded"] > 0
    stale(prod, "lessons")
    # nobody reading — the presync dump is off here, since a full dump holds the existing ledger as it
    # reads it, which keeps a re-seed row by row: in bulk, into a ledger holding the other tables
    answer = content_sync(make('presync_backup = "none"'), "sync")
    assert answer.status == 200 and bulk(answer.body) == {"lessons": True}, answer.body
    with psycopg.connect(prod) as conn:
        assert table_entries(conn, "lessons") == conn.execute("select count(*) from lessons").fetchone()[0]
    assert key_of(prod) == [KEY]


@pytest.mark.parametrize("ddl", [
    "create table t (id int primary key, body text)",
    "create table t (id int primary key, body text) partition by range (id); "
    "create table t_a partition of t for values from (minvalue) to (500); create table t_b partition of t for values from (500) to (maxvalue)",
], ids=["table", "partitioned"])
def test_stage_counts_a_partitioned_tables_rows_by_its_partitions(make_db, monkeypatch, ddl):
    """The size that decides staging is the catalog's row estimate: of the
    leaf partitions for a partitioned table (its own is none)."""
    from safesync.functions.content_sync.plan import table_spec
    from safesync.shared.db import TableRef, connect

    url = make_db()
    execute(url, ddl, "insert into t select g, md5(g::text) from generate_series(1, 1000) g", "analyze t")
    monkeypatch.setattr(seed, "MIN_ROWS", 1000)
    with connect(url) as conn:
        spec = table_spec(conn, conn, TableRef("public", "t"), "dev", "prod")
        staged = seed.stage(conn, spec, 0)
        assert staged is not None
        assert conn.execute(psycopg.sql.SQL("select count(*) from {}").format(staged.relation)).fetchone()[0] == 1000
        monkeypatch.setattr(seed, "MIN_ROWS", 1001)
        assert seed.stage(conn, spec, 1) is None
