"""Data diff of two databases on the one comparison engine
(``shared.rowdiff``, row hashes of ``shared.rowhash``): what content sync's
compare does, for every table of the schemas.

A table whose primary key is the same on both sides (and compared) is
compared by key-range checksums: identical tables cost one checksum pass
per side and no rows travel; for one that differs, the descent stops once
``MAX_KEYS`` differing keys are known, and those found are named. A table
without one — no primary key, keys that differ between the sides, a
materialized view — takes the engine's documented fallback
(``rowdiff.multiset_diff``): (count, sum of row hashes) per side, then the
rows of the first differing hash buckets, named by their whole text form.
Both sides always run at once (``rowdiff.Sides``).

Columns can be left out (masked columns: their values differ on purpose) and
tables can be compared by count only (structure-only copies); both are
reported as such, never silently skipped. A column whose type differs
between the sides is compared by its text form.
"""

from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import psycopg
from psycopg import sql

from safesync.shared import rowdiff
from safesync.shared.db import TableRef, list_tables, server_version, table_shapes
from safesync.shared.rowdiff import Sides
from safesync.shared.rowhash import RETYPED, TableShape

MAX_KEYS = 10
NOTHING_TO_COMPARE = "nothing to compare: no column is on both sides (see schema diff) or every one is masked"


@dataclass
class TableDiff:
    table: str
    status: str  # identical | differs | only in A | only in B | not compared
    rows_a: int | None = None
    rows_b: int | None = None
    excluded_columns: list[str] = field(default_factory=list)
    first_keys: list[str] = field(default_factory=list)
    note: str = ""
    # rows found per kind of difference ("only in A", "differs", "only in B"):
    # every one when ``complete``, else at least these (the search stopped)
    found: dict[str, int] = field(default_factory=dict)
    complete: bool = True
    keyed: bool = True  # rows matched on a primary key (else as a multiset)

    def row(self, a_name: str, b_name: str) -> dict[str, Any]:
        return {
            "table": self.table,
            "status": self.status.replace(" A", f" {a_name}").replace(" B", f" {b_name}"),
            f"rows {a_name}": self.rows_a,
            f"rows {b_name}": self.rows_b,
            "not compared columns": ", ".join(self.excluded_columns) or None,
            "first differing keys": "; ".join(
                k.replace("only in A:", f"only in {a_name}:").replace("only in B:", f"only in {b_name}:") for k in self.first_keys
            )
            or None,
            "note": self.note or None,
        }


@dataclass
class DataDiff:
    tables: list[TableDiff] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(t.status in ("identical", "not compared") for t in self.tables)

    @property
    def differing(self) -> list[TableDiff]:
        return [t for t in self.tables if t.status not in ("identical", "not compared")]

    def rows(self, a_name: str, b_name: str, *, all_tables: bool = False) -> list[dict[str, Any]]:
        chosen = self.tables if all_tables else [t for t in self.tables if t.status != "identical" or t.excluded_columns]
        return [t.row(a_name, b_name) for t in chosen]


def _record_text(values: Sequence[str]) -> str:
    """``row(v1, v2, ...)::text`` of text values, as PostgreSQL prints it
    (record_out: quoted when empty or holding a quote, backslash, comma,
    parenthesis or white space; quotes and backslashes doubled)."""

    def field(v: str) -> str:
        if v and not any(ch in '"\\(),' or ch in " \t\n\r\f\v" for ch in v):
            return v
        return '"' + v.replace("\\", "\\\\").replace('"', '""') + '"'

    return "(" + ",".join(field(v) for v in values) + ")"


def _natural(key: str) -> list:
    """Sort ``(10)`` after ``(9)``: digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", key)]


def _label(key: tuple[str, ...], text: str) -> str:
    text = text if len(text) <= 200 else text[:199] + "…"
    return f"({', '.join(key)})={text}" if key else f"row {text}"


def _keyed(sides: Sides, shape: TableShape, table: str, excluded: list[str], note: str, limit: int) -> TableDiff:
    diff = rowdiff.diff_table(sides, shape, limit=limit)
    found = [(_record_text(k), "only in A") for k in diff.new] + [(_record_text(k), "differs") for k in diff.changed]
    found += [(_record_text(k), "only in B") for k in diff.extra]
    found.sort(key=lambda f: _natural(f[0]))
    first = [f"{what}: {_label(shape.key, text)}" for text, what in found[:MAX_KEYS]]
    status = "differs" if first or diff.source_rows != diff.target_rows else "identical"
    counts = {"only in A": len(diff.new), "differs": len(diff.changed), "only in B": len(diff.extra)}
    return TableDiff(table, status, diff.source_rows, diff.target_rows, excluded, first, note,
                     {k: n for k, n in counts.items() if n}, diff.complete)


def _keyless(sides: Sides, shape: TableShape, table: str, excluded: list[str], note: str, limit: int) -> TableDiff:
    """Rows without a key, compared as a multiset: a row "differs" when
    its text is on both sides a different number of times; complete when
    every differing hash bucket was read."""
    diff = rowdiff.multiset_diff(sides, shape, rows_up_to=limit)
    first, counts = [], {"only in A": 0, "only in B": 0}
    for text in sorted(diff.rows, key=_natural):
        ha, hb = diff.rows[text]
        counts["only in A"] += max(len(ha) - len(hb), 0)
        counts["only in B"] += max(len(hb) - len(ha), 0)
        if len(first) < MAX_KEYS:
            what = "only in A" if not hb else "only in B" if not ha else "differs"
            first.append(f"{what}: {_label((), text)}")
    status = "differs" if diff.differs else "identical"
    return TableDiff(table, status, diff.source_rows, diff.target_rows, excluded, first, note,
                     {k: n for k, n in counts.items() if n}, complete=diff.complete, keyed=False)


def _shape(shapes_a: dict, shapes_b: dict, table: TableRef, excluded: set[str], native: bool) -> tuple[TableShape, list[str], str]:
    """The same description of ``table`` for both sides: the columns both
    have (less ``excluded``), the primary key when both sides agree on it."""
    cols_a, key_a = shapes_a[table]
    cols_b, key_b = shapes_b[table]
    types_b = {name: type_ for name, type_, _ in cols_b}
    common = [(name, type_, coll) for name, type_, coll in cols_a if name in types_b and name not in excluded]
    note = "" if {c[0] for c in cols_a} == set(types_b) else "columns differ (see schema diff): compared on the common columns"
    by_name = {name: (type_, coll) for name, type_, coll in common}
    same_type = {name for name, type_, _ in common if types_b[name] == type_}
    key = tuple(key_a) if key_a == key_b and set(key_a) <= same_type else ()
    shape = TableShape(
        table=table,
        key=key,
        key_types=tuple(by_name[k][0] for k in key),
        key_collatable=tuple(by_name[k][1] for k in key),
        columns=tuple(name for name, _, _ in common),
        column_types=tuple(type_ if name in same_type else RETYPED for name, type_, _ in common),
        native_hash=native,
    )
    return shape, sorted({c[0] for c in cols_a} & excluded), note


def data_diff(
    conn_a: psycopg.Connection,
    conn_b: psycopg.Connection,
    schemas: Sequence[str],
    *,
    exclude_columns: dict[TableRef, Iterable[str]] | None = None,
    count_only: Mapping[TableRef, str] | None = None,
    progress: Callable[[str], None] | None = None,
    limit: int = MAX_KEYS,
) -> DataDiff:
    """Compare the rows of every table of ``schemas``.

    ``exclude_columns``: columns left out of the hashes (reported per table).
    ``count_only``: tables (and materialized views) reported as "not
    compared" with both row counts, each with why ("structure only: data
    not copied"; the text before a colon is the short reason). ``limit``: how many differing rows of
    a keyed table to find before the search stops, and how many rows a keyless
    table's differing buckets may hold to be read whole (``TableDiff.complete``).
    """
    exclude_columns = {t: set(c) for t, c in (exclude_columns or {}).items()}
    count_only = dict(count_only or {})
    tables_a, tables_b = set(list_tables(conn_a, schemas)), set(list_tables(conn_b, schemas))
    views_a, views_b = _matviews(conn_a, schemas), _matviews(conn_b, schemas)
    shapes_a, shapes_b = table_shapes(conn_a, schemas), table_shapes(conn_b, schemas)
    native = min(server_version(conn_a), server_version(conn_b)) >= 140000  # hash_record_extended
    result = DataDiff()
    shapes: list[tuple[TableShape, list[str], str]] = []
    for table in sorted(tables_a | tables_b):
        if table not in tables_b:
            result.tables.append(TableDiff(str(table), "only in A"))
        elif table not in tables_a:
            result.tables.append(TableDiff(str(table), "only in B"))
        else:
            shapes.append(_shape(shapes_a, shapes_b, table, exclude_columns.get(table, set()), native))
    # Materialized views hold data too: compared like tables when both
    # are populated (whether each is populated is part of the schema diff).
    for view in sorted(views_a.keys() & views_b.keys()):
        if views_a[view] and views_b[view]:
            shapes.append(_shape(shapes_a, shapes_b, view, set(), native))
        else:
            result.tables.append(TableDiff(str(view), "not compared", note="materialized view not populated on both sides"))
    sides = Sides(conn_a, conn_b)
    try:
        with _transactions(conn_a, conn_b):
            sides.both(rowdiff.tune)  # no JIT, work_mem for the range checksums (this transaction only)
            for shape, excluded, note in shapes:
                if progress:
                    progress(f"hashing {shape.table}")
                uncompared = count_only.get(shape.table)
                if uncompared is None and not shape.columns and (shapes_a[shape.table][0] or shapes_b[shape.table][0]):
                    uncompared = NOTHING_TO_COMPARE  # hashing no column would call any two tables of as many rows equal
                if uncompared is not None:
                    ca, cb = sides.both(lambda c: _count(c, shape.table))
                    # rows can still be told apart by their number, unless they are left out on purpose
                    status = "differs" if uncompared is NOTHING_TO_COMPARE and ca != cb else "not compared"
                    result.tables.append(TableDiff(str(shape.table), status, ca, cb, excluded, note=uncompared))
                    continue
                if shape.key:
                    result.tables.append(_keyed(sides, shape, str(shape.table), excluded, note, limit))
                else:
                    result.tables.append(_keyless(sides, shape, str(shape.table), excluded, note, limit))
    finally:
        sides.close()
    result.tables.sort(key=lambda t: t.table)
    return result


@contextmanager
def _transactions(*conns: psycopg.Connection) -> Iterator[None]:
    """One transaction per connection for the comparison, so the engine's
    transaction-local settings hold across its queries: a savepoint inside
    the caller's transaction (a REPEATABLE READ snapshot stays the same), a
    transaction of its own on an autocommit connection."""
    with ExitStack() as stack:
        for conn in conns:
            stack.enter_context(conn.transaction())
        yield


def _count(conn: psycopg.Connection, table: TableRef) -> int:
    return conn.execute(sql.SQL("select count(*) from {}").format(table.ident)).fetchone()[0]


def _matviews(conn: psycopg.Connection, schemas: Sequence[str]) -> dict[TableRef, bool]:
    """Materialized views of ``schemas`` → populated?"""
    rows = conn.execute(
        """select n.nspname, c.relname, c.relispopulated from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where c.relkind = 'm' and n.nspname = any(%s)""",
        [list(schemas)],
    )
    return {TableRef(s, n): populated for s, n, populated in rows}
