"""The writes of a content sync, all inside the caller's target transaction.

Rows that are new or changed are streamed from the source with ``COPY ...
TO STDOUT`` straight into ``COPY ... FROM STDIN`` of a temporary table on
the target (text format: portable across servers and versions under the
pinned session settings), then merged with one
``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE (target) IS DISTINCT
FROM (source)`` per table, so rows that are already equal are never
updated and their triggers never fire. Identity ALWAYS columns are written
with ``OVERRIDING SYSTEM VALUE``; generated columns are left to the target.
No TRUNCATE, no CASCADE, no trigger disabling, no superuser.

Sequence moves are computed here but applied by the caller as the very
last statement before COMMIT: ``setval`` is not transactional, so it must
never run in a transaction that may still roll back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import psycopg
from psycopg import sql

from . import rowhash
from .diff import Key
from .plan import SyncPlan, TableSpec

CHUNK_KEYS = 10_000  # keys per COPY statement (the key list is sent inline)


def _chunks(keys: Sequence[Key], size: int = CHUNK_KEYS) -> Iterator[Sequence[Key]]:
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


def _select_by_keys(spec: TableSpec, keys: Sequence[Key], columns: sql.Composable) -> tuple[sql.Composable, list]:
    relation, params = rowhash.keys_relation(spec, keys)
    query = sql.SQL("select {cols} from {table} as t join {rel} on {match}").format(
        cols=columns, table=spec.table.ident, rel=relation, match=rowhash.keys_match(spec)
    )
    return query, params


def temp_name(index: int) -> sql.Identifier:
    """The temp table staging the rows of the index-th table (dropped at commit/rollback)."""
    return sql.Identifier(f"safesync_rows_{index}")


def stage_rows(src: psycopg.Connection, tgt: psycopg.Connection, spec: TableSpec, keys: Sequence[Key], temp: sql.Identifier) -> int:
    """Copy the source rows with ``keys`` into a new temp table on the
    target (dropped at the end of the transaction). Returns bytes moved."""
    cols = sql.SQL(", ").join(sql.Identifier("t", c) for c in spec.columns)
    names = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    tgt.execute(
        sql.SQL("create temp table {} on commit drop as select {} from {} as t with no data").format(temp, cols, spec.table.ident)
    )
    moved = 0
    for chunk in _chunks(list(keys)):
        query, params = _select_by_keys(spec, chunk, cols)
        copy_out = sql.SQL("copy ({}) to stdout").format(query)
        copy_in = sql.SQL("copy {} ({}) from stdin").format(temp, names)
        with src.cursor() as out_cur, tgt.cursor() as in_cur:
            with out_cur.copy(copy_out, params) as out, in_cur.copy(copy_in) as inp:
                for data in out:
                    moved += len(data)
                    inp.write(data)
    return moved


def upsert(tgt: psycopg.Connection, spec: TableSpec, temp: sql.Identifier) -> int:
    """Merge the staged rows; returns rows inserted or actually updated."""
    names = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    overriding = sql.SQL(" overriding system value") if spec.identity_always & set(spec.columns) else sql.SQL("")
    update = spec.update_columns
    if update:
        action = sql.SQL("do update set {sets} where ({cur}) is distinct from ({new})").format(
            sets=sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in update),
            # compared as text: the same notion of "equal" as the row hash
            cur=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("cur", c)) for c in update),
            new=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("excluded", c)) for c in update),
        )
    else:
        action = sql.SQL("do nothing")
    query = sql.SQL(
        "insert into {table} as cur ({names}){overriding} select {names} from {temp} on conflict ({key}) {action}"
    ).format(
        table=spec.table.ident,
        names=names,
        overriding=overriding,
        temp=temp,
        key=sql.SQL(", ").join(map(sql.Identifier, spec.primary_key)),
        action=action,
    )
    return tgt.execute(query).rowcount


def delete_rows(tgt: psycopg.Connection, spec: TableSpec, keys: Sequence[Key]) -> int:
    deleted = 0
    for chunk in _chunks(list(keys)):
        relation, params = rowhash.keys_relation(spec, chunk)
        query = sql.SQL("delete from {table} as t using {rel} where {match}").format(
            table=spec.table.ident, rel=relation, match=rowhash.keys_match(spec)
        )
        deleted += tgt.execute(query, params).rowcount
    return deleted


def protected_references(tgt: psycopg.Connection, plan: SyncPlan, spec: TableSpec, keys: Sequence[Key]) -> list[dict]:
    """Rows of non-content tables that reference the rows about to be
    deleted: each would block the delete, be cascaded or be set NULL."""
    found = []
    content = plan.content
    for fk in plan.referencing(spec.table):
        if fk.table in content:
            continue
        count = 0
        for chunk in _chunks(list(keys)):
            relation, params = rowhash.keys_relation(spec, chunk)
            query = sql.SQL(
                "select count(*) from {child} as c where ({child_cols}) in "
                "(select {parent_cols} from {parent} as t join {rel} on {match})"
            ).format(
                child=fk.table.ident,
                child_cols=sql.SQL(", ").join(sql.Identifier("c", col) for col in fk.columns),
                parent_cols=sql.SQL(", ").join(sql.Identifier("t", col) for col in fk.ref_columns),
                parent=spec.table.ident,
                rel=relation,
                match=rowhash.keys_match(spec),
            )
            count += tgt.execute(query, params).fetchone()[0]
        if count:
            found.append(
                {"table": fk.table.short, "rows": count, "references": spec.name, "constraint": fk.name, "on_delete": fk.on_delete}
            )
    return found


def column_texts(conn: psycopg.Connection, spec: TableSpec, keys: Sequence[Key]) -> dict[Key, tuple]:
    """Text form of every compared column of the rows with ``keys``."""
    if not keys:
        return {}
    n = len(spec.key)
    cols = sql.SQL(", ").join(
        [rowhash.key_text(spec)] + [sql.SQL("{}::text").format(sql.Identifier("t", c)) for c in spec.columns]
    )
    query, params = _select_by_keys(spec, keys, cols)
    return {tuple(r[:n]): tuple(r[n:]) for r in conn.execute(query, params)}


@dataclass(frozen=True)
class SequenceMove:
    table: str
    column: str
    sequence: str  # as pg_get_serial_sequence prints it (quoted where needed)
    current: int  # the highest value handed out so far (start - 1 if never used)
    max_id: int

    @property
    def moves(self) -> bool:
        return self.max_id > self.current

    def as_row(self) -> dict:
        return {
            "table": self.table,
            "column": self.column,
            "sequence": self.sequence,
            "current": self.current,
            "max_id": self.max_id,
            "set_to": self.max_id if self.moves else None,
        }


_HIGH_WATER = "(select case when is_called then last_value else last_value - 1 end from {seq})"


def sequence_moves(tgt: psycopg.Connection, spec: TableSpec) -> list[SequenceMove]:
    """Where each owned sequence of the table stands against the table's
    largest id (after this transaction's writes)."""
    out = []
    for column, seq in spec.sequences:
        query = sql.SQL("select max({col})::bigint, " + _HIGH_WATER + " from {table}").format(
            col=sql.Identifier(column), seq=sql.SQL(seq), table=spec.table.ident
        )
        max_id, current = tgt.execute(query).fetchone()
        if max_id is not None:
            out.append(SequenceMove(spec.name, column, seq, current, max_id))
    return out


def move_sequences(tgt: psycopg.Connection, moves: Sequence[SequenceMove]) -> None:
    """Move sequences forward only. ``greatest`` re-reads the sequence in the
    same statement, so a value the application drew meanwhile is never
    handed out again."""
    for move in moves:
        if move.moves:
            query = sql.SQL("select setval({name}::regclass, greatest({max_id}, " + _HIGH_WATER + "))").format(
                name=sql.Literal(move.sequence), max_id=sql.Literal(move.max_id), seq=sql.SQL(move.sequence)
            )
            tgt.execute(query)
