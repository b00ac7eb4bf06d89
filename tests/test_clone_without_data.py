"""``exclude_table_data`` on a partitioned table or an inheritance parent:
the rows of its partitions and children are not copied either."""

from __future__ import annotations

import psycopg

from safesync.functions.staging_clone import CloneOptions, clone_database
from safesync.shared.db import TableRef


def test_excluding_a_parents_data_excludes_its_partitions_and_childrens(make_db):
    """Before: pg_dump's --exclude-table-data left out the parent's own
    rows only, so every row of its partitions and inheritance children was
    copied to staging — and the report said "structure only: data not copied"."""
    dev, staging = make_db(), make_db()
    with psycopg.connect(dev, autocommit=True) as conn:
        for statement in (
            "create table events (id int, secret text) partition by list (id)",
            "create table events_1 partition of events for values in (1) partition by list (secret)",
            "create table events_1a partition of events_1 default",
            "create table people (id int, secret text)",
            "create table staff () inherits (people)",
            "insert into events values (1, 'event secret')",
            "insert into staff values (2, 'staff secret')",
        ):
            conn.execute(statement)
    options = CloneOptions(schemas=("public",), exclude_table_data=(TableRef("public", "events"), TableRef("public", "people")))
    result = clone_database(dev, staging, options)
    with psycopg.connect(staging) as conn:
        assert conn.execute("select count(*) from events").fetchone()[0] == 0
        assert conn.execute("select count(*) from people").fetchone()[0] == 0
    rows = {r["table"]: r for r in result.comparison.data.rows("dev", "staging", all_tables=True)}
    assert result.identical, rows
    assert {t: (r["status"], r["rows dev"], r["rows staging"]) for t, r in rows.items()} == {
        t: ("not compared", 1, 0) for t in ("public.events", "public.people", "public.staff")
    }
