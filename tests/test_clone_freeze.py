"""The clone loads the tables it creates with COPY FREEZE: rows land frozen
and all-visible (the visibility map says so at once: index-only scans fetch
no heap page), so the first reads after the swap (the proof, the app)
rewrite no page to set hint bits. Only statement lines are rewritten, never
copy data, and never a table the transaction did not create."""

from __future__ import annotations

import psycopg
from psycopg import sql

from safesync.functions.staging_clone import CloneOptions, clone_database
from safesync.functions.staging_clone.dumpfilter import DumpFilter
from safesync.shared.db import connect, database_fingerprint, list_tables, primary_key
from tests.fixtures.supabase import supabase_dev, supabase_staging, supabase_templates  # noqa: F401

SCHEMAS = ("public", "hotels")


def heap_fetches(url: str) -> dict[str, int]:
    """Heap fetches of an index-only scan of each table's primary key: 0
    when the visibility map says every page is all-visible, which COPY
    FREEZE sets (and a plain COPY does not, until a vacuum)."""
    fetches = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set enable_seqscan = off; set enable_bitmapscan = off")
        for table in list_tables(conn, list(SCHEMAS)):
            key = primary_key(conn, table)
            if not key or not conn.execute(sql.SQL("select exists (select from {})").format(table.ident)).fetchone()[0]:
                continue
            query = sql.SQL("explain (analyze, format json) select {} from {}").format(sql.SQL(", ").join(map(sql.Identifier, key)), table.ident)
            node = conn.execute(query).fetchone()[0][0]["Plan"]
            if node["Node Type"] == "Index Only Scan":
                fetches[str(table)] = node["Heap Fetches"]
    return fetches


def test_cloned_tables_are_written_frozen(supabase_dev, supabase_staging) -> None:
    clone_database(supabase_dev, supabase_staging, CloneOptions(schemas=SCHEMAS), compare_after=False)
    fetches = heap_fetches(supabase_staging)
    assert len(fetches) >= 3 and sum(fetches.values()) == 0, fetches
    with connect(supabase_dev) as dev, connect(supabase_staging) as staging:
        assert database_fingerprint(dev, list(SCHEMAS)) == database_fingerprint(staging, list(SCHEMAS))


DUMP = b"""--
-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: me
--

COPY public.t (a) FROM stdin;
COPY public.t (a) FROM stdin;
\\.


--
-- Data for Name: kept; Type: TABLE DATA; Schema: public; Owner: me
--

COPY public.kept (a) FROM stdin;
x
\\.

"""


def test_only_the_copy_statement_of_a_created_table_gets_freeze() -> None:
    freeze = DumpFilter(lambda entry: False, freeze=lambda entry: entry.name == "t")
    out = b"".join(freeze.feed(DUMP[i : i + 7]) for i in range(0, len(DUMP), 7)) + freeze.finish()
    assert out == DUMP.replace(b"COPY public.t (a) FROM stdin;\nCOPY", b"COPY public.t (a) FROM stdin WITH (FREEZE);\nCOPY", 1)
    assert out.count(b"FREEZE") == 1  # the data row that looks like a COPY is data, the other table is not ours
