"""Materialized views in a staging clone: they are refreshed from staging's
data as it ends up (masks applied), so no view keeps dev's real values of a
masked column."""

from __future__ import annotations

import psycopg

from safesync.functions.staging_clone import CloneOptions, Mask, clone_database
from safesync.shared.db import TableRef

DEV = (
    "create table users (id int primary key, email text not null)",
    "insert into users values (1, 'alice@real.example'), (2, 'bob@real.example')",
    "create materialized view user_emails as select id, email from users",
    "create view emails as select email from user_emails",  # a matview over a view over a matview:
    "create materialized view last_email as select max(email) as email from emails",  # refreshed after it
    "create materialized view never_filled as select email from users with no data",
)
EMAIL = Mask(TableRef("public", "users"), "email", "hash", "@masked.invalid")


def run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_matviews_of_a_masked_column_hold_masked_values_not_devs(make_db):
    """Before: pg_dump's REFRESH MATERIALIZED VIEW ran before the masks, so
    staging's user_emails and last_email held dev's real addresses."""
    dev, staging = make_db(), make_db()
    run(dev, *DEV)
    clone_database(dev, staging, CloneOptions(schemas=("public",), masks=(EMAIL,)), compare_after=False)
    with psycopg.connect(staging) as conn:
        masked = dict(conn.execute("select id, email from users").fetchall())
        assert all(e.endswith("@masked.invalid") for e in masked.values()), masked
        assert dict(conn.execute("select id, email from user_emails").fetchall()) == masked
        assert conn.execute("select email from last_email").fetchone()[0] == max(masked.values())
        assert not conn.execute("select relispopulated from pg_class where oid = 'never_filled'::regclass").fetchone()[0]


def test_the_proof_counts_matviews_derived_from_masked_or_uncopied_data_and_compares_the_others(make_db):
    """Before: such a matview was "differs" on every clone (staging's holds
    masked values, or none at all from a structure-only table), so the proof
    never said identical, and its report printed dev's real rows."""
    dev, staging = make_db(), make_db()
    run(
        dev, *DEV,
        "create materialized view user_ids as select id from users",  # reads no masked column: still compared
        "create table logs (id int primary key, line text)",
        "insert into logs values (1, 'secret line')",
        "create view recent_logs as select line from logs",
        "create materialized view log_lines as select line from recent_logs",
    )
    options = CloneOptions(schemas=("public",), masks=(EMAIL,), exclude_table_data=(TableRef("public", "logs"),))
    result = clone_database(dev, staging, options)
    rows = result.comparison.data.rows("dev", "staging", all_tables=True)
    assert result.identical, rows
    by_table = {r["table"]: r for r in rows}
    for view in ("public.user_emails", "public.last_email", "public.log_lines"):
        assert by_table[view]["status"] == "not compared" and by_table[view]["note"].startswith("derived from masked"), by_table[view]
    assert by_table["public.logs"]["note"] == "structure only: data not copied"
    assert by_table["public.user_ids"]["status"] == "identical"
    assert "real.example" not in repr(rows) and "secret line" not in repr(rows)
