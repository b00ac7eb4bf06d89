"""The ledger: per content row, the hash it had when safesync last wrote or
confirmed it — the common ancestor that makes a sync three-way.

It lives in the target, table ``safesync.content_ledger``, and is written in
the sync's own transaction (a rollback rolls it back too; the protection
proof allows exactly this table, by OID). Its rows are fixed-width — about
40 bytes plus 20 of index per content row, whatever the row's size, and no
copy of any key or value:

- an **entry** per content row: ``entry`` = the table's id (9 bits) and the
  row's key (54 bits): the key itself when it is one non-negative integer
  below 2^54 printed canonically, else a 54-bit hash of the key's text form
  (``hash_array_extended``, stable across versions, like the row hash);
  ``row_hash`` the row's hash when source and target last agreed (safesync
  wrote it, or found it equal);
- a **kept** entry (``kept`` true): ``on_conflict = "target"`` kept
  production's version: ``row_hash`` is that target version (NULL: kept
  absent) and ``declined_hash`` the source version declined (NULL: a
  deletion declined). While neither side moves, the row stays as it is
  without a new conflict;
- a **summary** per table (``entry`` = -1 - table id, ``summary`` jsonb):
  the table's name, number of entries, exact sum of their hashes, and the
  signature (compared columns, key, translations, hash scheme) the hashes
  were computed under;
- a **run record** per committed writing run (``entry`` = ``RUNS`` - n,
  ``summary`` jsonb: run id, action, the undo log's key and SHA-256),
  written in the run's own transaction: the target's word that the run
  committed, in commit order (``undo`` trusts no stored log without it).

Two keys of one table that hash alike share an entry (about one table in
36,000 at a million hashed keys): the summary then never matches, so that
table is re-seeded on every sync and its two rows are judged against one
ancestor — a needless conflict at worst, never a silent overwrite (that
would take a 64-bit row-hash collision on top).

Rows that are equal on both sides never travel, so the ledger cannot be
checked row by row without a full pass. Instead the summary is checked
against what the compare already knows: the target's total (count, hash
sum) minus the rows that differ must equal the summary minus the entries
of those rows. When it does (the steady state), every equal row's entry is
current and a sync touches only the entries of the rows it decided about.
When it does not — first run, a changed signature, rows equal on both sides
that were never recorded, the same edit made on both sides, entries of rows
gone from both — the sync re-seeds the table's entries of equal rows from
the target in SQL (one pass on the target, no row travels), and says so.

A ledger of the first format (one row per content row with its key as
``text[]``, a state and a timestamp — bigger than the content it tracked)
is migrated in place by the first sync that writes, in its transaction:
the same table (OID, owner, grants), every entry and summary kept.
Compare and dry-run read it as it is.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import psycopg
from psycopg import sql

from safesync.shared.db import TableRef
from safesync.shared.errors import ConfigError, Refused
from safesync.shared import pgarray, rowhash
from safesync.shared.rowdiff import Key, Prehashed, TableDiff, hashed_rows

from . import seed
from .plan import TableSpec

LEDGER = TableRef("safesync", "content_ledger")
CHUNK = 10_000
KEY_BITS = 54
MASK = (1 << KEY_BITS) - 1
MAX_TABLES = 1 << (63 - KEY_BITS)  # table ids 0..511
RUNS = -(1 << 40)  # run records: RUNS - 0, RUNS - 1, ... (below every summary)
_SUMMARIES = sql.SQL("entry between {} and -1").format(sql.Literal(-MAX_TABLES))
_CANONICAL = "^(0|[1-9][0-9]{0,16})$"  # a non-negative integer as PostgreSQL prints it

LEDGER_SQL = """
create table safesync.content_ledger (
    entry         bigint primary key,
    row_hash      bigint,
    kept          boolean,
    declined_hash bigint,
    summary       jsonb
)
"""


def _key_value(texts: Sequence[sql.Composable]) -> sql.Composable:
    """The 54-bit key part of an entry, from the key's text form."""
    array = sql.SQL("array[{}]::text[]").format(sql.SQL(", ").join(texts))
    hashed = sql.SQL("(hash_array_extended({}, 0) & {})").format(array, sql.Literal(MASK))
    if len(texts) != 1:
        return hashed
    k = texts[0]
    return sql.SQL("(case when {k} ~ {pat} and {k}::numeric <= {mask} then {k}::bigint else {hashed} end)").format(
        k=k, pat=sql.Literal(_CANONICAL), mask=sql.Literal(MASK), hashed=hashed
    )


def _row_key_value(spec: TableSpec, alias: str = "t") -> sql.Composable:
    """The same, from a table row: an integer key without a text round trip."""
    if spec.arithmetic == "int":
        k = sql.Identifier(alias, spec.key[0])
        hashed = sql.SQL("(hash_array_extended(array[{}::text], 0) & {})").format(k, sql.Literal(MASK))
        return sql.SQL("(case when {k} >= 0 and {k} <= {mask} then {k}::bigint else {hashed} end)").format(k=k, mask=sql.Literal(MASK), hashed=hashed)
    return _key_value([sql.SQL("{}::text").format(sql.Identifier(alias, k)) for k in spec.key])


def _entry(table_id: int, value: sql.Composable) -> sql.Composable:
    return sql.SQL("({}::bigint | {})").format(sql.Literal(table_id << KEY_BITS), value)


@dataclass(frozen=True)
class Entry:
    state: str  # "synced" | "kept"
    row_hash: int | None
    declined_hash: int | None = None


@dataclass
class TableLedger:
    """What the ledger knows about one table, for the rows that differ.

    ``status``: ``none`` (never synced with a ledger), ``stale`` (recorded
    under another signature: hashes not comparable) or ``ok``.
    ``consistent``: the summary check passed (entries of equal rows are
    current); when False a sync re-seeds them."""

    status: str
    entries: dict[Key, Entry] = field(default_factory=dict)
    rows: int = 0
    hash_sum: int = 0
    consistent: bool = False
    table_id: int | None = None  # None: the table has no summary yet

    @property
    def usable(self) -> bool:
        return self.status == "ok"


def signature(spec: TableSpec) -> str:
    return hashlib.sha256(json.dumps(spec.signature, sort_keys=True).encode()).hexdigest()


def exists(conn: psycopg.Connection) -> bool:
    return conn.execute("select to_regclass('safesync.content_ledger') is not null").fetchone()[0]


def first_format(conn: psycopg.Connection) -> bool:
    """The ledger of the first format: one row per key as text[]."""
    return conn.execute(
        "select exists (select from pg_attribute where attrelid = 'safesync.content_ledger'::regclass and attname = 'row_key' and not attisdropped)"
    ).fetchone()[0]


def needs_migration(conn: psycopg.Connection) -> bool:
    """A ledger of the first format, which the next writing sync migrates."""
    return exists(conn) and first_format(conn)


def ensure(conn: psycopg.Connection) -> int:
    """Create the ledger table if it is missing, or migrate a ledger of the
    first format (inside the caller's transaction, so a rollback undoes
    either), and return its OID.

    Existence is checked first: a least-privilege role may lack CREATE on
    the database (``CREATE SCHEMA IF NOT EXISTS`` checks the privilege before
    existence), and needs CREATE on schema ``safesync`` only the first time."""
    if not exists(conn):
        _ensure_schema(conn)
        conn.execute(LEDGER_SQL)
    elif first_format(conn):
        try:
            _migrate(conn)
        except psycopg.errors.InsufficientPrivilege:
            raise Refused(
                "nothing synced: the content ledger is of the first format and only its owner may migrate it "
                "(run one sync as the role that created safesync.content_ledger)"
            ) from None
    return conn.execute("select 'safesync.content_ledger'::regclass::oid").fetchone()[0]


def _ensure_schema(conn: psycopg.Connection) -> None:
    """Schema ``safesync``, unless it exists. Another request's runner may be
    creating it at this moment for its delivery log (``shared.locks``): our
    CREATE then waits for that transaction and fails on the catalog's unique
    name once it commits, and the schema it made is the one we wanted."""
    if conn.execute("select to_regnamespace('safesync') is not null").fetchone()[0]:
        return
    try:
        with conn.transaction():  # a savepoint: the sync's transaction goes on
            conn.execute("create schema safesync")
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
        pass


# table ids of a first-format ledger: its summaries in name order (load and the migration agree)
_FIRST_FORMAT_IDS = sql.SQL(
    "select table_name, (row_number() over (order by table_name) - 1)::int as id from safesync.content_ledger where state = 'summary'"
)


def _migrate(conn: psycopg.Connection) -> None:
    """First format → fixed-width, in place: the same table, every entry
    (synced or kept) and summary carried over; table ids by name. Two keys
    that now share an entry keep one (the summary no longer matches, so that
    table is re-seeded by this very sync). The table is rewritten compactly
    at the end (CLUSTER: the old columns' space is not left behind)."""
    pkey = conn.execute(
        "select conname from pg_constraint where conrelid = 'safesync.content_ledger'::regclass and contype = 'p'"
    ).fetchone()
    statements = [sql.SQL("alter table safesync.content_ledger drop constraint {}").format(sql.Identifier(pkey[0]))] if pkey else []
    statements += [
        sql.SQL("alter table safesync.content_ledger add column entry bigint, add column kept boolean, add column summary jsonb"),
        sql.SQL(
            "update safesync.content_ledger as l set "
            "entry = case when l.state = 'summary' then -1 - n.id else (n.id::bigint << {bits}) | {value} end, "
            "kept = case when l.state = 'kept' then true end, "
            "summary = case when l.state = 'summary' then jsonb_build_object('table', l.table_name, 'rows', l.rows, 'hash_sum', l.hash_sum, 'signature', l.signature) end "
            "from ({ids}) as n where n.table_name = l.table_name"
        ).format(bits=sql.Literal(KEY_BITS), value=_key_value_of_array(sql.SQL("l.row_key")), ids=_FIRST_FORMAT_IDS),
        # entries of a table without a summary were never usable; two keys sharing an entry keep one
        sql.SQL("delete from safesync.content_ledger where entry is null"),
        sql.SQL("delete from safesync.content_ledger as l using safesync.content_ledger as o where o.entry = l.entry and o.ctid < l.ctid"),
        sql.SQL(
            "alter table safesync.content_ledger drop column table_name, drop column row_key, drop column state, drop column rows, "
            "drop column hash_sum, drop column signature, drop column updated_at, "
            "alter column entry set not null, add constraint content_ledger_pkey primary key (entry)"
        ),
        sql.SQL("cluster safesync.content_ledger using content_ledger_pkey"),
    ]
    if conn.execute(sql.SQL("select count(*) > %s from ({}) as n").format(_FIRST_FORMAT_IDS), [MAX_TABLES]).fetchone()[0]:
        raise ConfigError(f"the content ledger tracks at most {MAX_TABLES} tables")
    for statement in statements:
        conn.execute(statement)


def _key_value_of_array(array: sql.Composable) -> sql.Composable:
    """``_key_value`` of a stored ``text[]`` key (the first format's)."""
    hashed = sql.SQL("(hash_array_extended({}, 0) & {})").format(array, sql.Literal(MASK))
    first = sql.SQL("{}[1]").format(array)
    return sql.SQL(
        "(case when cardinality({a}) = 1 and {k} ~ {pat} and {k}::numeric <= {mask} then {k}::bigint else {hashed} end)"
    ).format(a=array, k=first, pat=sql.Literal(_CANONICAL), mask=sql.Literal(MASK), hashed=hashed)


def _keys_join(spec: TableSpec, keys: Sequence[Key], extra: dict[str, list] | None = None) -> tuple[sql.Composable, list]:
    """``(select <54-bit key value> as v, ordinality as i, <extra> from unnest(...)) as u``."""
    n = len(spec.key)
    names = [f"c{i}" for i in range(n)] + list(extra or {})
    casts = ["text"] * n + ["boolean" if name == "kept" else "bigint" for name in (extra or {})]
    arrays = pgarray.columns(keys, n) + [pgarray.array(v) for v in (extra or {}).values()]
    rel = sql.SQL("(select {} as v, x.i{} from unnest({}) with ordinality as x({}, i)) as u").format(
        _key_value([sql.Identifier("x", f"c{i}") for i in range(n)]),
        sql.Composed([sql.SQL(", {}").format(sql.Identifier("x", name)) for name in (extra or {})]),
        sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(c)) for c in casts),
        sql.SQL(", ").join(map(sql.Identifier, names)),
    )
    return rel, arrays


def _chunks(keys: Sequence[Key]) -> Iterable[Sequence[Key]]:
    for i in range(0, len(keys), CHUNK):
        yield keys[i : i + CHUNK]


def _summaries(conn: psycopg.Connection) -> dict[str, tuple[int, dict]]:
    """table name -> (table id, summary)."""
    if first_format(conn):
        rows = conn.execute(
            sql.SQL(
                "select l.table_name, n.id, l.rows, l.hash_sum, l.signature from safesync.content_ledger as l "
                "join ({}) as n on n.table_name = l.table_name where l.state = 'summary'"
            ).format(_FIRST_FORMAT_IDS)
        ).fetchall()
        return {name: (i, {"table": name, "rows": n, "hash_sum": int(total), "signature": sig}) for name, i, n, total, sig in rows}
    query = sql.SQL("select entry, summary from safesync.content_ledger where {}").format(_SUMMARIES)
    return {row[1]["table"]: (-1 - row[0], row[1]) for row in conn.execute(query)}


def _standing(found: tuple[int, dict] | None, spec: TableSpec) -> str:
    """What a table's summary (``_summaries``) says of its entries: none
    recorded, recorded under another signature (stale), or ok."""
    if found is None:
        return "none"
    return "ok" if found[1]["signature"] == signature(spec) else "stale"


def unseeded(conn: psycopg.Connection, specs: Sequence[TableSpec]) -> list[TableSpec]:
    """The tables a writing sync re-seeds whatever the compare finds: their
    entries none or stale (``load`` says so too)."""
    summaries = _summaries(conn) if exists(conn) else {}
    return [s for s in specs if _standing(summaries.get(str(s.table)), s) != "ok"]


def load(conn: psycopg.Connection, diffs: Sequence[TableDiff]) -> dict[TableRef, TableLedger]:
    """The ledger's view of every table: status, the entries of the rows
    that differ, and whether the entries of the equal rows are current."""
    if not exists(conn):
        return {d.spec.table: TableLedger("none") for d in diffs}
    summaries = _summaries(conn)
    first = first_format(conn)
    out = {}
    for diff in diffs:
        spec = diff.spec
        found = summaries.get(str(spec.table))
        standing = _standing(found, spec)
        if standing != "ok":
            out[spec.table] = TableLedger(standing, table_id=found[0] if found else None)
            continue
        table_id, summary = found
        keys = sorted({*diff.new, *diff.changed, *diff.extra})
        entries = _entries_first_format(conn, spec, keys) if first else _entries(conn, spec, table_id, keys)
        ledger = TableLedger("ok", entries, summary["rows"], int(summary["hash_sum"]), table_id=table_id)
        ledger.consistent = _consistent(diff, ledger)
        out[spec.table] = ledger
    return out


def _entries(conn: psycopg.Connection, spec: TableSpec, table_id: int, keys: Sequence[Key]) -> dict[Key, Entry]:
    entries: dict[Key, Entry] = {}
    for chunk in _chunks(keys):
        rel, params = _keys_join(spec, chunk)
        query = sql.SQL(
            "select u.i, l.kept, l.row_hash, l.declined_hash from {} join safesync.content_ledger as l on l.entry = {}"
        ).format(rel, _entry(table_id, sql.SQL("u.v")))
        with _index_lookups(conn):
            for i, kept, row_hash, declined in conn.execute(query, params):
                entries[chunk[i - 1]] = Entry("kept" if kept else "synced", row_hash, declined)
    return entries


def _entries_first_format(conn: psycopg.Connection, spec: TableSpec, keys: Sequence[Key]) -> dict[Key, Entry]:
    """Entries of a ledger of the first format (read by compare and dry-run;
    a sync migrates the ledger before it writes)."""
    entries: dict[Key, Entry] = {}
    for chunk in _chunks(keys):
        arrays = pgarray.columns(chunk, len(spec.key))
        rel = sql.SQL("(select array[{}]::text[] as k from unnest({}) as x({})) as u").format(
            sql.SQL(", ").join(sql.Identifier("x", f"c{i}") for i in range(len(spec.key))),
            sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in spec.key),
            sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(len(spec.key))),
        )
        query = sql.SQL(
            "select l.row_key, l.state, l.row_hash, l.declined_hash from {} join safesync.content_ledger as l "
            "on l.table_name = %s and l.row_key = u.k"
        ).format(rel)
        with _index_lookups(conn):
            for key, state, row_hash, declined in conn.execute(query, [*arrays, str(spec.table)]):
                entries[tuple(key)] = Entry(state, row_hash, declined)
    return entries


def _consistent(diff: TableDiff, ledger: TableLedger) -> bool:
    """Rows equal on both sides: their count and hash sum on the target must
    be exactly what the ledger holds for every key that is not differing."""
    equal_rows = diff.target_rows - len(diff.changed) - len(diff.extra)
    equal_sum = diff.target_sum - sum(t for _, t in diff.changed.values()) - sum(diff.extra.values())
    rows = ledger.rows - len(ledger.entries)
    total = ledger.hash_sum - sum(e.row_hash or 0 for e in ledger.entries.values())
    return (rows, total) == (equal_rows, equal_sum)


@dataclass
class LedgerWrites:
    """What a sync records for one table (applied after its row writes)."""

    synced: dict[Key, int] = field(default_factory=dict)  # key -> hash written/confirmed
    kept: dict[Key, tuple[int | None, int | None]] = field(default_factory=dict)  # key -> (target hash, declined source hash)
    removed: list[Key] = field(default_factory=list)  # rows deleted by the sync
    reseed: bool = False  # re-seed the entries of equal rows from the target
    target_rows: int = 0  # rows the target has (what a re-seed writes, about): chooses how to seed

    @property
    def touched(self) -> int:
        return len(self.synced) + len(self.kept) + len(self.removed)


def apply(
    conn: psycopg.Connection, spec: TableSpec, ledger: TableLedger, writes: LedgerWrites, unresolved: Sequence[Key], hashes: Prehashed | None = None
) -> dict:
    """Record one table's decisions (the ledger exists in today's format:
    ``ensure`` ran). ``unresolved``: keys whose rows still differ after the
    sync (never recorded as synced by a re-seed). ``hashes``: the target
    rows hashed before the compare (``seed.stage``), what a re-seed reads.
    Returns what was done, for the report."""
    name = str(spec.table)
    table_id = ledger.table_id if ledger.table_id is not None else _new_table_id(conn)
    done = {"entries_written": len(writes.synced) + len(writes.kept), "entries_removed": len(writes.removed), "reseeded": 0}
    if writes.reseed:
        keep = list(ledger.entries) if ledger.usable else []
        skip = sorted({*unresolved, *writes.synced, *writes.kept, *writes.removed})
        done["bulk"] = _reseed(conn, spec, table_id, keep, skip, writes.target_rows, hashes)
    entries = dict(ledger.entries) if ledger.usable else {}
    for key in writes.removed:
        entries.pop(key, None)
    for chunk in _chunks(list(writes.removed)):
        rel, params = _keys_join(spec, chunk)
        with _index_lookups(conn):
            conn.execute(sql.SQL("delete from safesync.content_ledger as l using {} where l.entry = {}").format(rel, _entry(table_id, sql.SQL("u.v"))), params)
    rows: list[tuple[Key, bool | None, int | None, int | None]] = [(k, None, h, None) for k, h in writes.synced.items()]
    rows += [(k, True, t, s) for k, (t, s) in writes.kept.items()]
    for i in range(0, len(rows), CHUNK):
        _store(conn, spec, table_id, rows[i : i + CHUNK])
    for key, kept, h, d in rows:
        entries[key] = Entry("kept" if kept else "synced", h, d)
    if writes.reseed:
        low, high = table_id << KEY_BITS, ((table_id + 1) << KEY_BITS) - 1
        count, total = conn.execute(
            "select count(*), coalesce(sum(row_hash), 0) from safesync.content_ledger where entry between %s and %s", [low, high]
        ).fetchone()
        done["reseeded"] = count
    else:  # the entries of every other row are unchanged: adjust the summary by the difference
        before = ledger.entries
        count = ledger.rows + len(entries) - len(before)
        total = ledger.hash_sum + sum(e.row_hash or 0 for e in entries.values()) - sum(e.row_hash or 0 for e in before.values())
    summary = {"table": name, "rows": count, "hash_sum": int(total), "signature": signature(spec)}
    conn.execute(
        "insert into safesync.content_ledger (entry, summary) values (%s, %s) on conflict (entry) do update set summary = excluded.summary",
        [-1 - table_id, psycopg.types.json.Jsonb(summary)],
    )
    done["table_id"] = table_id
    return done


def _new_table_id(conn: psycopg.Connection) -> int:
    used = conn.execute(sql.SQL("select coalesce(max(-1 - entry), -1) from safesync.content_ledger where {}").format(_SUMMARIES)).fetchone()[0]
    if used + 1 >= MAX_TABLES:
        raise ConfigError(f"the content ledger tracks at most {MAX_TABLES} tables")
    return used + 1


def _store(conn: psycopg.Connection, spec: TableSpec, table_id: int, rows: list[tuple[Key, bool | None, int | None, int | None]]) -> None:
    rel, params = _keys_join(spec, [r[0] for r in rows], {"kept": [r[1] for r in rows], "h": [r[2] for r in rows], "d": [r[3] for r in rows]})
    conn.execute(
        sql.SQL(
            "insert into safesync.content_ledger as l (entry, row_hash, kept, declined_hash) "
            "select distinct on (1) {}, u.h, u.kept, u.d from {} order by 1, u.i desc on conflict (entry) do update "
            "set row_hash = excluded.row_hash, kept = excluded.kept, declined_hash = excluded.declined_hash"
        ).format(_entry(table_id, sql.SQL("u.v")), rel),
        params,
    )


@contextmanager
def _index_lookups(conn: psycopg.Connection) -> Iterator[None]:
    """A few thousand keys against a ledger of millions: the planner would
    hash the whole ledger; one index lookup per key is far cheaper."""
    conn.execute("set local enable_hashjoin = off; set local enable_mergejoin = off")
    try:
        yield
    finally:
        conn.execute("reset enable_hashjoin; reset enable_mergejoin")


def _reseed(
    conn: psycopg.Connection, spec: TableSpec, table_id: int, keep: Sequence[Key], skip: Sequence[Key], rows: int, hashes: Prehashed | None
) -> bool:
    """Replace the table's entries by one entry per target row (hashed in
    SQL on the target, or read from ``hashes``) except the ``skip`` keys,
    keeping the entries of ``keep`` (rows decided about individually).
    ``rows``: about how many that is. Returns whether the entries went in
    in bulk (``seed``: the key built once after them)."""
    low, high = table_id << KEY_BITS, ((table_id + 1) << KEY_BITS) - 1
    if keep:
        rel, params = _keys_join(spec, keep)
        conn.execute(
            sql.SQL(
                "delete from safesync.content_ledger as l where l.entry between %s and %s "
                "and not exists (select from {} where {} = l.entry)"
            ).format(rel, _entry(table_id, sql.SQL("u.v"))),
            [low, high, *params],
        )
    else:
        conn.execute("delete from safesync.content_ledger where entry between %s and %s", [low, high])
    if skip:
        skipped, params = rowhash.keys_relation(spec, skip)
        exclude = [sql.SQL("not exists (select from {} where {})").format(skipped, rowhash.keys_match(spec))]
    else:
        exclude, params = [], []
    entry = _entry(table_id, _row_key_value(spec))
    if keep:  # entries kept above: not inserted again
        exclude.append(sql.SQL("not exists (select from safesync.content_ledger as l where l.entry = {})").format(entry))
    rel, h = hashed_rows(spec, hashes)
    entries = sql.SQL("select {entry} as entry, {h} as row_hash from {rel} {where}").format(
        entry=entry, h=h, rel=rel,
        where=sql.SQL("where ") + sql.SQL(" and ").join(exclude) if exclude else sql.SQL(""),
    )
    bulk = not keep and seed.worth_it(rows, _entries_of_others(conn, table_id))
    if bulk and seed.in_bulk(conn, entries, params, low, high, hashed=hashes is not None):
        return True
    insert = sql.SQL("insert into safesync.content_ledger (entry, row_hash) ") + entries
    try:
        with conn.transaction():  # a plain insert: twice as fast as ON CONFLICT's speculative insertion of every row
            conn.execute(insert, params)
    except psycopg.errors.UniqueViolation:  # two keys whose hashes share an entry: keep one
        conn.execute(insert + sql.SQL(" on conflict (entry) do nothing"), params)
    return False


def _entries_of_others(conn: psycopg.Connection, table_id: int) -> int:
    """Entries of every other table, as their summaries count them."""
    query = sql.SQL("select coalesce(sum((summary->>'rows')::bigint), 0) from safesync.content_ledger where {} and entry <> %s").format(_SUMMARIES)
    return conn.execute(query, [-1 - table_id]).fetchone()[0]


# -- what undo needs --------------------------------------------------------------


def entry_of(table_id: int, texts: Sequence[sql.Composable]) -> sql.Composable:
    """The entry of a key given as its columns' text forms."""
    return _entry(table_id, _key_value(texts))


def table_id_of(conn: psycopg.Connection, spec: TableSpec) -> int | None:
    """The table's id in the ledger (None: never recorded)."""
    found = _summaries(conn).get(str(spec.table)) if exists(conn) else None
    return found[0] if found else None


def record_run(conn: psycopg.Connection, record: dict) -> None:
    """Record a committing run (inside its transaction, after its writes)."""
    n = conn.execute("select count(*) from safesync.content_ledger where entry <= %s", [RUNS]).fetchone()[0]
    conn.execute("insert into safesync.content_ledger (entry, summary) values (%s, %s)", [RUNS - n, psycopg.types.json.Jsonb(record)])


def runs(conn: psycopg.Connection) -> list[dict]:
    """Every recorded run, oldest first."""
    if not exists(conn) or first_format(conn):
        return []
    return [r[0] for r in conn.execute("select summary from safesync.content_ledger where entry <= %s order by entry desc", [RUNS])]


def summary_of(conn: psycopg.Connection, table_id: int | None) -> dict | None:
    """A table's summary as stored (None: the table has none)."""
    if table_id is None:
        return None
    row = conn.execute("select summary from safesync.content_ledger where entry = %s", [-1 - table_id]).fetchone()
    return row[0] if row else None


def resummarise(conn: psycopg.Connection, table_id: int, summary: dict | None) -> None:
    """After an undo put entries back: a table that had no summary before
    the run being undone has no ledger again (entries and summary gone: the
    next sync seeds it, asking for --adopt where rows differ, as before);
    otherwise its summary (``summary`` if it is missing) becomes what its
    entries add up to, keeping its name and signature."""
    low, high = table_id << KEY_BITS, ((table_id + 1) << KEY_BITS) - 1
    if summary is None:
        conn.execute("delete from safesync.content_ledger where entry between %s and %s or entry = %s", [low, high, -1 - table_id])
        return
    conn.execute(
        "insert into safesync.content_ledger (entry, summary) values (%s, %s) on conflict (entry) do nothing",
        [-1 - table_id, psycopg.types.json.Jsonb(summary)],
    )
    conn.execute(
        "update safesync.content_ledger set summary = summary || (select jsonb_build_object('rows', count(*), 'hash_sum', coalesce(sum(row_hash), 0)) "
        "from safesync.content_ledger where entry between %s and %s) where entry = %s",
        [low, high, -1 - table_id],
    )
