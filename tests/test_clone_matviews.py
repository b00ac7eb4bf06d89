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

