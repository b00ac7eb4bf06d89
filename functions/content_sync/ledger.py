"""The ledger: per content row, the hash it had when safesync last wrote or
confirmed it — the common ancestor that makes a sync three-way.

It lives in the target, table ``safesync.content_ledger``, and is written in
the sync's own transaction (a rollback rolls it back too; the protection
proof allows exactly this table, by OID). One row per (table, row key):

- ``synced``: ``row_hash`` is the row's hash when source and target last
  agreed (safesync wrote it, or found it equal);
- ``kept``: ``on_conflict = "target"`` kept production's version:
  ``row_hash`` is that target version (NULL: kept absent) and
  ``declined_hash`` the source version declined (NULL: a deletion declined).
  While neither side moves, the row stays as it is without a new conflict;
- ``summary`` (row key ``{}``): per table, the number of entries, the exact
  sum of their hashes, and the signature (compared columns, key,
  translations, hash scheme) the hashes were computed under.

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

from . import rowhash
from .diff import Key, TableDiff
from .plan import TableSpec

LEDGER = TableRef("safesync", "content_ledger")
SUMMARY_KEY: list[str] = []
CHUNK = 10_000

LEDGER_SQL = """
create table safesync.content_ledger (
    table_name    text not null,
    row_key       text[] not null,
    state         text not null check (state in ('synced', 'kept', 'summary')),
    row_hash      bigint,
    declined_hash bigint,
    rows          bigint,
    hash_sum      numeric,
    signature     text,
    updated_at    timestamptz not null default now(),
    primary key (table_name, row_key)
)
"""


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

    @property
    def usable(self) -> bool:
        return self.status == "ok"


def signature(spec: TableSpec) -> str:
    return hashlib.sha256(json.dumps(spec.signature, sort_keys=True).encode()).hexdigest()


def exists(conn: psycopg.Connection) -> bool:
    return conn.execute("select to_regclass('safesync.content_ledger') is not null").fetchone()[0]


def ensure(conn: psycopg.Connection) -> int:
    """Create the ledger table if it is missing (inside the caller's
    transaction, so a rollback removes it again) and return its OID.

    Existence is checked first: a least-privilege role may lack CREATE on
    the database (``CREATE SCHEMA IF NOT EXISTS`` checks the privilege before
    existence), and needs CREATE on schema ``safesync`` only the first time."""
    if not exists(conn):
        if not conn.execute("select to_regnamespace('safesync') is not null").fetchone()[0]:
            conn.execute("create schema safesync")
        conn.execute(LEDGER_SQL)
    return conn.execute("select 'safesync.content_ledger'::regclass::oid").fetchone()[0]


def _keys_join(spec: TableSpec, keys: Sequence[Key], extra: dict[str, list] | None = None) -> tuple[sql.Composable, list]:
    """``(select array[c0, ...] as k, <extra columns> from unnest(...)) as u``."""
    n = len(spec.key)
    names = [f"c{i}" for i in range(n)] + list(extra or {})
    casts = ["text"] * n + ["text" if name == "state" else "bigint" for name in (extra or {})]
    arrays = [[k[i] for k in keys] for i in range(n)] + list((extra or {}).values())
    rel = sql.SQL("(select array[{}]::text[] as k{} from unnest({}) as x({})) as u").format(
        sql.SQL(", ").join(sql.Identifier("x", f"c{i}") for i in range(n)),
        sql.Composed([sql.SQL(", {}").format(sql.Identifier("x", name)) for name in (extra or {})]),
        sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(c)) for c in casts),
        sql.SQL(", ").join(map(sql.Identifier, names)),
    )
    return rel, arrays


def _chunks(keys: Sequence[Key]) -> Iterable[Sequence[Key]]:
    for i in range(0, len(keys), CHUNK):
        yield keys[i : i + CHUNK]


def load(conn: psycopg.Connection, diffs: Sequence[TableDiff]) -> dict[TableRef, TableLedger]:
    """The ledger's view of every table: status, the entries of the rows
    that differ, and whether the entries of the equal rows are current."""
    if not exists(conn):
        return {d.spec.table: TableLedger("none") for d in diffs}
    out = {}
    for diff in diffs:
        spec = diff.spec
        summary = conn.execute(
            "select rows, hash_sum, signature from safesync.content_ledger where table_name = %s and row_key = %s::text[]",
            [str(spec.table), SUMMARY_KEY],
        ).fetchone()
        if summary is None:
            out[spec.table] = TableLedger("none")
            continue
        if summary[2] != signature(spec):
            out[spec.table] = TableLedger("stale")
            continue
        keys = sorted({*diff.new, *diff.changed, *diff.extra})
        entries: dict[Key, Entry] = {}
        for chunk in _chunks(keys):
            rel, params = _keys_join(spec, chunk)
            # one index lookup per key (LIMIT keeps the subquery from being flattened into a hash join over the whole ledger)
            query = sql.SQL(
                "select l.row_key, l.state, l.row_hash, l.declined_hash from {} cross join lateral "
                "(select * from safesync.content_ledger as l where l.table_name = %s and l.row_key = u.k limit 1) as l"
            ).format(rel)
            for key, state, row_hash, declined in conn.execute(query, [*params, str(spec.table)]):
                entries[tuple(key)] = Entry(state, row_hash, declined)
        ledger = TableLedger("ok", entries, summary[0], int(summary[1]))
        ledger.consistent = _consistent(diff, ledger)
        out[spec.table] = ledger
    return out


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

    @property
    def touched(self) -> int:
        return len(self.synced) + len(self.kept) + len(self.removed)


def apply(conn: psycopg.Connection, spec: TableSpec, ledger: TableLedger, writes: LedgerWrites, unresolved: Sequence[Key]) -> dict:
    """Record one table's decisions. ``unresolved``: keys whose rows still
    differ after the sync (never recorded as synced by a re-seed). Returns
    what was done, for the report."""
    name = str(spec.table)
    done = {"entries_written": len(writes.synced) + len(writes.kept), "entries_removed": len(writes.removed), "reseeded": 0}
    if writes.reseed:
        keep = list(ledger.entries) if ledger.usable else []
        _reseed(conn, spec, keep, sorted({*unresolved, *writes.synced, *writes.kept, *writes.removed}))
    entries = dict(ledger.entries) if ledger.usable else {}
    for key in writes.removed:
        entries.pop(key, None)
    for chunk in _chunks(list(writes.removed)):
        rel, params = _keys_join(spec, chunk)
        with _index_lookups(conn):
            conn.execute(
                sql.SQL("delete from safesync.content_ledger as l using {} where l.table_name = %s and l.row_key = u.k").format(rel),
                [*params, name],
            )
    rows: list[tuple[Key, str, int | None, int | None]] = [(k, "synced", h, None) for k, h in writes.synced.items()]
    rows += [(k, "kept", t, s) for k, (t, s) in writes.kept.items()]
    # keys with an entry: updated in place; others inserted (cheaper than an upsert's speculative insertion)
    known = set(ledger.entries) if ledger.usable and not writes.reseed else set()
    for i in range(0, len(rows), CHUNK):
        part = rows[i : i + CHUNK]
        for update, group in ((True, [r for r in part if r[0] in known]), (False, [r for r in part if r[0] not in known])):
            if group:
                _store(conn, spec, group, update)
    for key, state, h, d in rows:
        entries[key] = Entry(state, h, d)
    if writes.reseed:
        count, total = conn.execute(
            "select count(*), coalesce(sum(row_hash), 0) from safesync.content_ledger where table_name = %s and state <> 'summary'",
            [name],
        ).fetchone()
        done["reseeded"] = count
    else:  # the entries of every other row are unchanged: adjust the summary by the difference
        before = ledger.entries
        count = ledger.rows + len(entries) - len(before)
        total = ledger.hash_sum + sum(e.row_hash or 0 for e in entries.values()) - sum(e.row_hash or 0 for e in before.values())
    conn.execute(
        "insert into safesync.content_ledger (table_name, row_key, state, rows, hash_sum, signature) "
        "values (%s, %s::text[], 'summary', %s, %s, %s) on conflict (table_name, row_key) do update "
        "set rows = excluded.rows, hash_sum = excluded.hash_sum, signature = excluded.signature, updated_at = now()",
        [name, SUMMARY_KEY, count, total, signature(spec)],
    )
    return done


def _store(conn: psycopg.Connection, spec: TableSpec, rows: list[tuple[Key, str, int | None, int | None]], update: bool) -> None:
    rel, params = _keys_join(
        spec, [r[0] for r in rows], {"state": [r[1] for r in rows], "h": [r[2] for r in rows], "d": [r[3] for r in rows]}
    )
    if update:
        with _index_lookups(conn):
            conn.execute(
                sql.SQL(
                    "update safesync.content_ledger as l set state = u.state, row_hash = u.h, declined_hash = u.d, updated_at = now() "
                    "from {} where l.table_name = %s and l.row_key = u.k"
                ).format(rel),
                [*params, str(spec.table)],
            )
        return
    conn.execute(
        sql.SQL(
            "insert into safesync.content_ledger as l (table_name, row_key, state, row_hash, declined_hash) "
            "select %s, u.k, u.state, u.h, u.d from {} on conflict (table_name, row_key) do update "
            "set state = excluded.state, row_hash = excluded.row_hash, declined_hash = excluded.declined_hash, updated_at = now()"
        ).format(rel),
        [str(spec.table), *params],
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


def _reseed(conn: psycopg.Connection, spec: TableSpec, keep: Sequence[Key], skip: Sequence[Key]) -> None:
    """Replace the table's entries by one ``synced`` entry per target row
    (hashed in SQL on the target) except the ``skip`` keys, keeping the
    entries of ``keep`` (rows decided about individually)."""
    name = str(spec.table)
    if keep:
        rel, params = _keys_join(spec, keep)
        conn.execute(
            sql.SQL(
                "delete from safesync.content_ledger as l where l.table_name = %s and l.state <> 'summary' "
                "and not exists (select from {} where u.k = l.row_key)"
            ).format(rel),
            [name, *params],
        )
    else:
        conn.execute("delete from safesync.content_ledger where table_name = %s and state <> 'summary'", [name])
    key_array = sql.SQL("array[{}]::text[]").format(rowhash.key_text(spec))
    if skip:
        skipped, params = rowhash.keys_relation(spec, skip)
        exclude = sql.SQL("where not exists (select from {} where {})").format(skipped, rowhash.keys_match(spec))
    else:
        exclude, params = sql.SQL(""), []
    conn.execute(
        sql.SQL(
            "insert into safesync.content_ledger (table_name, row_key, state, row_hash) "
            "select %s, {key}, 'synced', {h} from {rel} {exclude} "
            "on conflict (table_name, row_key) do nothing"
        ).format(key=key_array, h=rowhash.row_hash(spec), rel=rowhash.relation(spec), exclude=exclude),
        [name, *params],
    )
