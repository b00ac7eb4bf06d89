"""Seeding many ledger entries at once: build the ledger's key after the
rows, not row by row.

A first sync of a big table writes one ledger entry per target row. Kept
up row by row, the primary key costs as much as the heap inserts; built
once afterwards (a sort, parallel workers where the server has them) it
costs a fraction. And an INSERT … SELECT never runs in parallel, so the
hashing — the other big part — would run on one core. So when the entries
to seed are many and outnumber those already in the ledger, the sync
hashes the rows into a temporary table (CREATE TABLE AS may use parallel
workers; a temporary table writes no WAL, it is dropped at commit), drops
the key, inserts the entries and adds the same key back — in its own
transaction: a rollback brings the old index back, and no other session
sees the ledger without its key (the ALTER TABLE holds ACCESS EXCLUSIVE
until commit; a compare starting meanwhile waits for the commit). On 1M
rows this costs about half the row-by-row seeding's server CPU.

A first sync of a big table also hashes every target row twice: once for
the compare's first pass, once for the entries. So it hashes them once,
before the compare, into a temporary table (``stage``, in parallel) that
both read: the compare's first pass on the target sums it, and the seed
inserts from it. The hashes stay those of the rows the seed would hash
after the writes: the target reads one snapshot (REPEATABLE READ), the
rows the sync writes are never taken from it, and a sync in which anything
else changed a content row does not commit (``job._verify_untouched``).

Taken only when nobody can tell, so ``ledger_watch`` sees the definition
it opened and the proof sees only the ledger written; otherwise the rows
go in one by one as before:

- the role owns the ledger (ALTER TABLE needs it; a least-privilege sync
  role does not own it);
- the key is the one safesync creates — ``PRIMARY KEY (entry)``, the only
  index, in the default tablespace, nothing referencing it, default
  replica identity — so adding it back gives the same definition;
- no enabled event trigger fires on ALTER TABLE (its code would run inside
  the sync, unaudited: the audit reads only those on the sync's usual DDL);
- the ledger can be locked at once (``NOWAIT``): a compare reading it just
  then must not make the sync wait out its lock timeout and fail.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg import sql

from safesync.shared import rowhash
from safesync.shared.rowdiff import Prehashed

from .audit import MIGRATION_DDL
from .plan import TableSpec
from .proof import catalog_path

MIN_ROWS = 50_000  # below this, the index kept row by row costs less than the DDL around it

# the ledger's key as ``ensure`` creates it, when adding it back is invisible; else no row
_STANDARD_KEY = """
select k.conname from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_class x on x.oid = k.conindid
where c.oid = to_regclass('safesync.content_ledger') and k.contype = 'p' and pg_get_constraintdef(k.oid) = 'PRIMARY KEY (entry)'
  and pg_get_indexdef(k.conindid) = format('CREATE UNIQUE INDEX %%I ON safesync.content_ledger USING btree (entry)', k.conname)
  and x.reltablespace = 0 and c.relreplident = 'd' and pg_has_role(c.relowner, 'USAGE')
  and (select count(*) from pg_index i where i.indrelid = c.oid) = 1
  and not exists (select from pg_constraint f where f.confrelid = c.oid)
  and not exists (select from pg_event_trigger e where e.evtenabled <> 'D' and e.evtevent = any(%(events)s)
                  and (e.evttags is null or 'ALTER TABLE' = any(e.evttags)))
"""
_EVENTS = sorted({event for event, tag in MIGRATION_DDL if tag == "ALTER TABLE"})


@contextmanager
def _parallel_hashing(conn: psycopg.Connection) -> Iterator[None]:
    """The planner counts a row hash as one cheap operator and every row
    through a Gather as costly, so it would hash on one core: moving rows
    to the leader is made free for the one statement."""
    previous = conn.execute("select current_setting('parallel_tuple_cost'), set_config('parallel_tuple_cost', '0', true)").fetchone()[0]
    try:
        yield
    finally:
        conn.execute("select set_config('parallel_tuple_cost', %s, true)", [previous])


def stage(conn: psycopg.Connection, spec: TableSpec, index: int) -> Prehashed | None:
    """Hash the target rows of a table the sync will seed into a temporary
    table (dropped at commit) of its key columns and row hash, when the
    table is big enough to be worth it and the role may create temporary
    tables; None otherwise (the compare and the seed hash the table)."""
    estimate, may = conn.execute(  # a partitioned table's rows are its leaf partitions' (a plain table has no tree)
        "select coalesce((select sum(greatest(c.reltuples, 0)) from pg_partition_tree(%(t)s::regclass) as p "
        "join pg_class as c on c.oid = p.relid where p.isleaf), (select greatest(reltuples, 0) from pg_class where oid = %(t)s::regclass))::bigint, "
        "has_database_privilege(current_database(), 'TEMPORARY')",
        {"t": spec.table.ident.as_string(conn)},
    ).fetchone()
    if not spec.key or not may or not worth_it(estimate or 0, 0):
        return None
    column = "row_hash"
    while column in spec.key:  # a key column of that name keeps its own
        column += "_"
    relation = sql.Identifier("pg_temp", f"safesync_hashes_{index}")
    keys = sql.SQL(", ").join(sql.Identifier("t", k) for k in spec.key)
    with _parallel_hashing(conn):
        conn.execute(
            sql.SQL("create temporary table {} on commit drop as select {}, {} as {} from {}").format(
                relation, keys, rowhash.row_hash(spec), sql.Identifier(column), spec.from_item()
            )
        )
    return Prehashed(relation, column)


def worth_it(rows: int, others: int) -> bool:
    """Seed ``rows`` entries in bulk into a ledger holding ``others`` entries
    (the whole key is rebuilt: worth it while the new entries dominate)?"""
    return rows >= MIN_ROWS and others <= rows


def in_bulk(conn: psycopg.Connection, entries: sql.Composable, params: list, low: int, high: int, *, hashed: bool = False) -> bool:
    """Insert the ``entries`` query's rows (columns ``entry``, ``row_hash``;
    entries between ``low`` and ``high`` only) with the ledger's key
    dropped, then add the key back; False (nothing done) when that would
    show (see the module doc): the caller inserts as usual. ``hashed``:
    the query reads staged hashes (nothing to run in parallel first)."""
    with catalog_path(conn):
        found = conn.execute(_STANDARD_KEY, {"events": _EVENTS}).fetchone()
    if found is None:
        return False
    try:
        with conn.transaction():  # released, the savepoint's lock stays with the transaction
            conn.execute("lock table safesync.content_ledger in access exclusive mode nowait")
    except psycopg.errors.LockNotAvailable:
        return False
    key = sql.Identifier(found[0])
    if not hashed:
        staged = sql.Identifier("pg_temp", f"safesync_seed_{low}")  # one per table seeded
        with _parallel_hashing(conn):
            conn.execute(sql.SQL("create temporary table {} on commit drop as ").format(staged) + entries, params)
        entries, params = sql.SQL("select entry, row_hash from {}").format(staged), []
    conn.execute(sql.SQL("alter table safesync.content_ledger drop constraint {}").format(key))
    conn.execute(sql.SQL("insert into safesync.content_ledger (entry, row_hash) ") + entries, params)
    add = sql.SQL("alter table safesync.content_ledger add constraint {} primary key (entry)").format(key)
    try:
        with conn.transaction():
            conn.execute(add)
    except psycopg.errors.UniqueViolation:  # two keys whose hashes share an entry: keep the first, as ON CONFLICT DO NOTHING would
        conn.execute(
            "delete from safesync.content_ledger as l using safesync.content_ledger as o "
            "where l.entry between %(low)s and %(high)s and o.entry between %(low)s and %(high)s and o.entry = l.entry and o.ctid < l.ctid",
            {"low": low, "high": high},
        )
        conn.execute(add)
    return True
