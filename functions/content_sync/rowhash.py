"""Row hashing and key expressions, computed in SQL so rows never travel to
be compared.

A row's hash is ``hashtextextended(row(c1, c2, ...)::text, 0)``: the record
text form is unambiguous (NULL is an empty field, '' is ``""``, the string
'NULL' is ``NULL``; quotes and separators are escaped), every column goes
through its type's output function under the pinned session settings
(TimeZone UTC, DateStyle ISO, extra_float_digits 3, hex bytea, postgres
IntervalStyle), jsonb prints with canonical key order, and the column list
is given by name so both sides hash the same columns in the same order.
``hashtextextended`` is the 64-bit hash that backs hash partitioning, hence
stable across PostgreSQL versions; it is about 35 % cheaper than md5 and
64 bits are plenty to tell a changed row from an unchanged one.

A range checksum is ``count(*)`` and ``sum(hash)`` (order independent,
summed exactly as numeric). Keys travel as their text form: canonical under
the pinned settings, comparable in Python, and cast back to the column type
on the server.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import sql

from .plan import TableSpec

HASH_SEED = 0
C_COLLATION = sql.SQL(' collate "C"')


def row_hash(columns: Sequence[str], alias: str = "t") -> sql.Composable:
    """bigint hash of the listed columns of ``alias``."""
    fields = sql.SQL(", ").join(sql.Identifier(alias, c) for c in columns)
    return sql.SQL("hashtextextended(row({})::text, {})").format(fields, sql.Literal(HASH_SEED))


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


def key_order(spec: TableSpec, alias: str = "t") -> sql.Composable:
    return sql.SQL(", ").join(key_columns(spec, alias))


def typed(spec: TableSpec, index: int, value: sql.Composable) -> sql.Composable:
    """Cast a text value to the type of key column ``index`` (with "C"
    collation for text-like keys, so comparisons match ``key_row``)."""
    cast = sql.SQL("{}::{}").format(value, sql.SQL(spec.key_types[index]))
    return sql.Composed([sql.SQL("("), cast, sql.SQL(")"), C_COLLATION]) if spec.key_collatable[index] else cast


def typed_row(spec: TableSpec, values: Sequence[sql.Composable]) -> sql.Composable:
    """Text values cast to the key types, shaped like ``key_row``."""
    cols = [typed(spec, i, v) for i, v in enumerate(values)]
    return cols[0] if len(cols) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(cols))


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
