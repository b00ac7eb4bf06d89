"""The one row hash, and key expressions, computed in SQL so rows never
travel to be compared — shared by content sync, validate's data diff, the
staging-clone proof and migrate's rehearsal (``shared.rowdiff`` is the
comparison built on it) and by ``shared.db.table_fingerprint``.

A table is described to the engine by a ``TableShape``: its qualified name,
the key rows are matched on (with the key columns' types and whether they
collate), and the compared columns (with their types). Content sync's
``TableSpec`` is one (it adds what the writer needs, and reads translated
FK columns through a subquery: ``from_item``).

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
PostgreSQL versions. A column whose type differs between the two sides is
hashed as its text form on both (``RETYPED``).

A range checksum is ``count(*)`` and ``sum(hash)`` (order independent,
summed exactly as numeric). Keys travel as their text form: canonical under
the pinned settings, comparable in Python, and cast back to the column type
on the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Sequence

from psycopg import sql

from safesync.shared import pgarray

if TYPE_CHECKING:
    from safesync.shared.db import TableRef

HASH_SEED = 0
C_COLLATION = sql.SQL(' collate "C"')


# types whose equality is equality of their text form (under pinned settings)
NATIVE_TYPES = frozenset(
    {"smallint", "integer", "bigint", "boolean", "uuid", "date", "bytea", "oid",
     "timestamp without time zone", "timestamp with time zone"}
)
_TEXT_TYPE = re.compile(r"^(text|character varying(\(\d+\))?)$")
INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
RETYPED = "(types differ)"  # a column type for "hash the text form": not native, not text


@dataclass(frozen=True)
class TableShape:
    """One table as the engine compares it: rows matched on ``key`` (text-like
    key columns ordered in "C" byte order so servers with different locales
    agree on ranges; empty: no key, see ``rowdiff.multiset_diff``), hashed
    over ``columns`` in this order, ``column_types`` saying how each enters
    the hash (``format_type`` names)."""

    table: TableRef
    key: tuple[str, ...]
    key_types: tuple[str, ...]
    key_collatable: tuple[bool, ...]
    columns: tuple[str, ...]
    column_types: tuple[str, ...]
    native_hash: bool = True  # both servers >= 14: hash_record_extended

    def from_item(self, alias: str = "t") -> sql.Composable:
        """``FROM`` item for the rows as compared, aliased ``alias``."""
        return sql.SQL("{} as {}").format(self.table.ident, sql.Identifier(alias))

    @cached_property
    def arithmetic(self) -> str | None:
        """'int' or 'uuid' when key ranges can be split by arithmetic on the
        key value (one integer or uuid column); None: split by quantiles.
        Cached: the descent asks once per fetched row."""
        if len(self.key) != 1:
            return None
        if self.key_types[0] in INTEGER_TYPES:
            return "int"
        if self.key_types[0] == "uuid":
            return "uuid"
        return None


def _field(alias: str, column: str, type_: str) -> sql.Composable:
    ident = sql.Identifier(alias, column)
    if type_ in NATIVE_TYPES:
        return ident
    if _TEXT_TYPE.match(type_):
        return sql.Composed([ident, C_COLLATION])
    return sql.Composed([sql.SQL("{}::text").format(ident), C_COLLATION])


def row_hash(spec: TableShape, alias: str = "t") -> sql.Composable:
    """bigint hash of the compared columns of ``alias``."""
    if not spec.native_hash:
        fields = sql.SQL(", ").join(sql.Identifier(alias, c) for c in spec.columns)
        return sql.SQL("hashtextextended(row({})::text, {})").format(fields, sql.Literal(HASH_SEED))
    fields = sql.SQL(", ").join(_field(alias, c, t) for c, t in zip(spec.columns, spec.column_types))
    return sql.SQL("hash_record_extended(row({}), {})").format(fields, sql.Literal(HASH_SEED))


def key_columns(spec: TableShape, alias: str = "t") -> list[sql.Composable]:
    """Key columns as ordered by the diff: text-like ones in "C" order."""
    return [
        sql.Composed([sql.Identifier(alias, k), C_COLLATION]) if collatable else sql.Identifier(alias, k)
        for k, collatable in zip(spec.key, spec.key_collatable)
    ]


def key_row(spec: TableShape, alias: str = "t") -> sql.Composable:
    """The key as one comparable value: ``t.id`` or a row ``(t.a, t.b)``."""
    cols = key_columns(spec, alias)
    return cols[0] if len(cols) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(cols))


def key_text(spec: TableShape, alias: str = "t") -> sql.Composable:
    """The key columns' text forms, comma separated (a select list)."""
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(alias, k)) for k in spec.key)


def keys_relation(spec: TableShape, keys: Sequence[tuple[str, ...]]) -> tuple[sql.Composable, list[list[str]]]:
    """A relation ``k(c0, c1, ...)`` of typed key values from text keys, for
    joins (``unnest`` of one text array per key column) and its params."""
    n = len(spec.key)
    names = [f"c{i}" for i in range(n)]
    arrays = pgarray.columns(keys, n)
    select = sql.SQL(", ").join(
        sql.SQL("{}::{} as {}").format(sql.Identifier("u", names[i]), sql.SQL(spec.key_types[i]), sql.Identifier(names[i]))
        for i in range(n)
    )
    unnest = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in range(n))
    relation = sql.SQL("(select {} from unnest({}) as u({})) as k").format(
        select, unnest, sql.SQL(", ").join(map(sql.Identifier, names))
    )
    return relation, arrays


def keys_match(spec: TableShape, alias: str = "t") -> sql.Composable:
    """Join condition between ``alias`` and ``keys_relation``'s ``k``."""
    return sql.SQL(" and ").join(
        sql.SQL("{} = {}").format(sql.Identifier(alias, c), sql.Identifier("k", f"c{i}")) for i, c in enumerate(spec.key)
    )
