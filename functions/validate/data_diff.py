"""Data diff of two databases, data-diff style: hashes computed in SQL.

For every table: one pass on each side gives (row count, order-independent
sum of 64-bit row hashes). Tables whose pair matches are identical. For a
table that differs, each side groups its row hashes into buckets chosen by a
hash of the key (the primary key, or the whole row when there is none), so
both sides bucket the same rows the same way without agreeing on key ranges;
only the rows of the first differing buckets travel to Python, where the
first differing keys are named. Both sides are scanned at the same time (one
thread per database).

Columns can be left out (masked columns: their values differ on purpose) and
tables can be compared by count only (structure-only copies); both are
reported as such, never silently skipped.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import psycopg
from psycopg import sql

from safesync.shared.db import TableRef, list_tables, table_shapes

MAX_KEYS = 10
MAX_BUCKETS_FETCHED = 8


@dataclass
class TableDiff:
    table: str
    status: str  # identical | differs | only in A | only in B | not compared
    rows_a: int | None = None
    rows_b: int | None = None
    excluded_columns: list[str] = field(default_factory=list)
    first_keys: list[str] = field(default_factory=list)
    note: str = ""

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


@dataclass(frozen=True)
class _Shape:
    """What is hashed for one table: the same expressions on both sides."""

    table: TableRef
    columns: tuple[str, ...]
    key: tuple[str, ...]  # empty: the whole row is the key

    def row_text(self) -> sql.Composable:
        return sql.SQL("row({})::text").format(sql.SQL(", ").join(sql.Identifier("t", c) for c in self.columns))

    def key_text(self) -> sql.Composable:
        if not self.key:
            return self.row_text()
        return sql.SQL("row({})::text").format(sql.SQL(", ").join(sql.Identifier("t", c) for c in self.key))


def _h64(text: sql.Composable) -> sql.Composable:
    return sql.SQL("('x' || left(md5({}), 16))::bit(64)::bigint").format(text)


def _bucket(text: sql.Composable, buckets: int) -> sql.Composable:
    return sql.SQL("(('x' || left(md5({}), 8))::bit(32)::int & {})").format(text, sql.Literal(buckets - 1))


def _totals(conn: psycopg.Connection, shape: _Shape) -> tuple[int, str]:
    query = sql.SQL("select count(*), coalesce(sum({}::numeric), 0)::text from {} as t").format(
        _h64(shape.row_text()), shape.table.ident
    )
    count, total = conn.execute(query).fetchone()
    return count, total


def _bucket_sums(conn: psycopg.Connection, shape: _Shape, buckets: int) -> dict[int, tuple[int, str]]:
    query = sql.SQL(
        "select b, count(*), sum(h::numeric)::text from (select {} as b, {} as h from {} as t) s group by b"
    ).format(_bucket(shape.key_text(), buckets), _h64(shape.row_text()), shape.table.ident)
    return {b: (n, s) for b, n, s in conn.execute(query)}


def _bucket_rows(conn: psycopg.Connection, shape: _Shape, buckets: int, chosen: list[int]) -> dict[str, list[int]]:
    """key text → row hashes (a list: without a primary key, duplicates count)."""
    query = sql.SQL("select {} as k, {} as h from {} as t where {} = any(%s)").format(
        shape.key_text(), _h64(shape.row_text()), shape.table.ident, _bucket(shape.key_text(), buckets)
    )
    out: dict[str, list[int]] = {}
    for key, h in conn.execute(query, [chosen]):
        out.setdefault(key, []).append(h)
    return out


def _natural(key: str) -> list:
    """Sort ``(10)`` after ``(9)``: digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", key)]


def _bucket_count(rows: int) -> int:
    n = 16
    while n < 65536 and n * 1000 < rows:
        n *= 2
    return n


def _label(shape: _Shape, key: str) -> str:
    text = key if len(key) <= 200 else key[:199] + "…"
    return f"({', '.join(shape.key)})={text}" if shape.key else f"row {text}"


def _first_keys(shape: _Shape, a: psycopg.Connection, b: psycopg.Connection, rows: int, pool: ThreadPoolExecutor) -> list[str]:
    buckets = _bucket_count(rows)
    fa, fb = pool.submit(_bucket_sums, a, shape, buckets), pool.submit(_bucket_sums, b, shape, buckets)
    sa, sb = fa.result(), fb.result()
    differing = sorted(k for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k))[:MAX_BUCKETS_FETCHED]
    if not differing:
        return []
    fa, fb = pool.submit(_bucket_rows, a, shape, buckets, differing), pool.submit(_bucket_rows, b, shape, buckets, differing)
    ra, rb = fa.result(), fb.result()
    found = []
    for key in sorted(ra.keys() | rb.keys(), key=_natural):
        ha, hb = sorted(ra.get(key, [])), sorted(rb.get(key, []))
        if ha == hb:
            continue
        if not hb:
            found.append(f"only in A: {_label(shape, key)}")
        elif not ha:
            found.append(f"only in B: {_label(shape, key)}")
        else:
            found.append(f"differs: {_label(shape, key)}")
        if len(found) >= MAX_KEYS:
            break
    return found


def _shape(shapes_a: dict, shapes_b: dict, table: TableRef, excluded: set[str]) -> tuple[_Shape, list[str], str]:
    cols_a, key_a = shapes_a[table]
    cols_b, key_b = shapes_b[table]
    common = tuple(c for c in cols_a if c in set(cols_b) and c not in excluded)
    note = "" if set(cols_a) == set(cols_b) else "columns differ (see schema diff): compared on the common columns"
    key = tuple(key_a) if key_a == key_b and set(key_a) <= set(common) else ()
    return _Shape(table, common, key), sorted(set(cols_a) & excluded), note


def data_diff(
    conn_a: psycopg.Connection,
    conn_b: psycopg.Connection,
    schemas: Sequence[str],
    *,
    exclude_columns: dict[TableRef, Iterable[str]] | None = None,
    count_only: Iterable[TableRef] = (),
    progress: Callable[[str], None] | None = None,
) -> DataDiff:
    """Compare the rows of every table of ``schemas``.

    ``exclude_columns``: columns left out of the hashes (reported per table).
    ``count_only``: tables reported as "not compared" with both row counts
    (e.g. tables cloned without data).
    """
    exclude_columns = {t: set(c) for t, c in (exclude_columns or {}).items()}
    count_only = set(count_only)
    tables_a, tables_b = set(list_tables(conn_a, schemas)), set(list_tables(conn_b, schemas))
    views_a, views_b = _matviews(conn_a, schemas), _matviews(conn_b, schemas)
    shapes_a, shapes_b = table_shapes(conn_a, schemas), table_shapes(conn_b, schemas)
    result = DataDiff()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="data-diff") as pool:
        shapes: list[tuple[_Shape, list[str], str]] = []
        for table in sorted(tables_a | tables_b):
            if table not in tables_b:
                result.tables.append(TableDiff(str(table), "only in A"))
            elif table not in tables_a:
                result.tables.append(TableDiff(str(table), "only in B"))
            else:
                shapes.append(_shape(shapes_a, shapes_b, table, exclude_columns.get(table, set())))
        # Materialized views hold data too: compared like tables when both
        # are populated (whether each is populated is part of the schema diff).
        for view in sorted(views_a.keys() & views_b.keys()):
            if views_a[view] and views_b[view]:
                shapes.append(_shape(shapes_a, shapes_b, view, set()))
            else:
                result.tables.append(TableDiff(str(view), "not compared", note="materialized view not populated on both sides"))

        def totals(conn: psycopg.Connection) -> list[tuple[int, str]]:
            out = []
            for shape, _, _ in shapes:
                if progress and conn is conn_a:
                    progress(f"hashing {shape.table}")
                out.append(_totals(conn, shape) if shape.table not in count_only else (_count(conn, shape.table), ""))
            return out

        fa, fb = pool.submit(totals, conn_a), pool.submit(totals, conn_b)
        for (shape, excluded, note), ta, tb in zip(shapes, fa.result(), fb.result()):
            diff = TableDiff(str(shape.table), "identical", ta[0], tb[0], excluded, note=note)
            if shape.table in count_only:
                diff.status, diff.note = "not compared", "structure only: data not copied"
            elif ta != tb:
                diff.status = "differs"
                diff.first_keys = _first_keys(shape, conn_a, conn_b, max(ta[0], tb[0]), pool)
            result.tables.append(diff)
    result.tables.sort(key=lambda t: t.table)
    return result


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
