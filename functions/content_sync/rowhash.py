"""Row hashing and key expressions, computed in SQL so rows never travel to
be compared.

A row's hash is ``hash_record_extended(row(e1, e2, ...), 0)`` (PostgreSQL
14+, else ``hashtextextended(row(...)::text, 0)``), 64 bits, where each
column enters either as itself — only for types whose equality is exactly
equality of their text form: integers, bool, uuid, date, timestamp,
timestamptz, bytea, and text/varchar compared in "C" (byte) collation — or
as its text form (``col::text collate "C"``: numeric, floats, jsonb, json,
arrays, enums, intervals, domains, anything else). So two rows hash alike
exactly when every column prints alike under the pinned session settings
(TimeZone UTC, DateStyle ISO, extra_float_digits 3, hex bytea, postgres
IntervalStyle): NULL, '' and 'NULL' differ; 1.5 and 1.50 differ; jsonb
key order does not matter (jsonb prints canonically). Columns are listed by
name so both sides hash the same columns in the same order. Skipping the
text conversion where it adds nothing makes hashing about twice as fast as
hashing the whole row's text, and faster than ``COPY`` can print the table.
Both hash functions back hash partitioning, hence are stable across
PostgreSQL versions.

Rows are read through ``relation``: the table itself, or — when an FK
column points at the ids of a table matched on a natural key — a subquery
exposing that column as the parent's natural key (text), so both sides hash
the reference, not the environment-specific id.

A range checksum is ``count(*)`` and ``sum(hash)`` (order independent,
summed exactly as numeric). Keys travel as their text form: canonical under
the pinned settings, comparable in Python, and cast back to the column type
on the server.
"""

from __future__ import annotations

import re
from typing import Sequence

from psycopg import sql

from .plan import TableSpec, Translation

HASH_SEED = 0
C_COLLATION = sql.SQL(' collate "C"')


# types whose equality is equality of their text form (under pinned settings)
NATIVE_TYPES = frozenset(
    {"smallint", "integer", "bigint", "boolean", "uuid", "date", "bytea", "oid",
     "timestamp without time zone", "timestamp with time zone"}
)
_TEXT_TYPE = re.compile(r"^(text|character varying(\(\d+\))?)$")


def _field(alias: str, column: str, type_: str) -> sql.Composable:
    ident = sql.Identifier(alias, column)
    if type_ in NATIVE_TYPES:
        return ident
    if _TEXT_TYPE.match(type_):
        return sql.Composed([ident, C_COLLATION])
    return sql.Composed([sql.SQL("{}::text").format(ident), C_COLLATION])


def row_hash(spec: TableSpec, alias: str = "t") -> sql.Composable:
    """bigint hash of the compared columns of ``alias``."""
    if not spec.native_hash:
        fields = sql.SQL(", ").join(sql.Identifier(alias, c) for c in spec.columns)
        return sql.SQL("hashtextextended(row({})::text, {})").format(fields, sql.Literal(HASH_SEED))
    fields = sql.SQL(", ").join(_field(alias, c, t) for c, t in zip(spec.columns, spec.column_types))
    return sql.SQL("hash_record_extended(row({}), {})").format(fields, sql.Literal(HASH_SEED))


def key_columns(spec: TableSpec, alias: str = "t") -> list[sql.Composable]:
    """Key columns as ordered by the diff: text-like ones in "C" order."""
    return [
        sql.Composed([sql.Identifier(alias, k), C_COLLATION]) if collatable else sql.Identifier(alias, k)
        for k, collatable in zip(spec.key, spec.key_collatable)
    ]


def key_row(spec: TableSpec, alias: str = "t") -> sql.Composable:
    """The key as one comparable value: ``t.id`` or a row ``(t.a, t.b)``."""
    cols = key_columns(spec, alias)
    return cols[0] if len(cols) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(cols))


def key_text(spec: TableSpec, alias: str = "t") -> sql.Composable:
    """The key columns' text forms, comma separated (a select list)."""
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(alias, k)) for k in spec.key)


def keys_relation(spec: TableSpec, keys: Sequence[tuple[str, ...]]) -> tuple[sql.Composable, list[list[str]]]:
    """A relation ``k(c0, c1, ...)`` of typed key values from text keys, for
    joins (``unnest`` of one text array per key column) and its params."""
    n = len(spec.key)
    names = [f"c{i}" for i in range(n)]
    arrays = [[k[i] for k in keys] for i in range(n)]
    select = sql.SQL(", ").join(
        sql.SQL("{}::{} as {}").format(sql.Identifier("u", names[i]), sql.SQL(spec.key_types[i]), sql.Identifier(names[i]))
        for i in range(n)
    )
    unnest = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in range(n))
    relation = sql.SQL("(select {} from unnest({}) as u({})) as k").format(
        select, unnest, sql.SQL(", ").join(map(sql.Identifier, names))
    )
    return relation, arrays


def keys_match(spec: TableSpec, alias: str = "t") -> sql.Composable:
    """Join condition between ``alias`` and ``keys_relation``'s ``k``."""
    return sql.SQL(" and ").join(
        sql.SQL("{} = {}").format(sql.Identifier(alias, c), sql.Identifier("k", f"c{i}")) for i, c in enumerate(spec.key)
    )


def parent_key_text(tr: Translation, alias: str) -> sql.Composable:
    """The parent's natural key as one text value (NULL when no row matched)."""
    cols = [sql.Identifier(alias, k) for k in tr.parent_key]
    if len(cols) == 1:
        return sql.SQL("{}::text").format(cols[0])
    return sql.SQL("case when {} is null then null else row({})::text end").format(cols[0], sql.SQL(", ").join(cols))


def relation(spec: TableSpec, alias: str = "t") -> sql.Composable:
    """``FROM`` item for the table's rows as compared: the table aliased
    ``alias``, or a subquery (flattened by the planner, so key-range
    predicates still use the table's indexes) whose translated FK columns
    hold the parent's natural key."""
    if not spec.translations:
        return sql.SQL("{} as {}").format(spec.table.ident, sql.Identifier(alias))
    needed = list(dict.fromkeys([*spec.key, *spec.columns]))
    select, joins = [], []
    for col in needed:
        tr = spec.translation(col)
        if tr is None:
            select.append(sql.Identifier("r", col))
            continue
        p = f"p{len(joins)}"
        joins.append(
            sql.SQL(" left join {} as {} on {} = {}").format(
                tr.parent.ident, sql.Identifier(p), sql.Identifier(p, tr.parent_column), sql.Identifier("r", col)
            )
        )
        select.append(sql.SQL("{} as {}").format(parent_key_text(tr, p), sql.Identifier(col)))
    return sql.SQL("(select {} from {} as r{}) as {}").format(
        sql.SQL(", ").join(select), spec.table.ident, sql.Composed(joins), sql.Identifier(alias)
    )
