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

A table matched on a natural key (``match_on``) is written without its
primary key — an UPDATE of the rows the target has (matched on the natural
key, so they keep the target's id), then an INSERT of the others, whose id
comes from the target's sequence or identity.
Translated FK columns arrive staged as the parent's natural key and are
written as the id of the target's parent row (parents are written first);
a staged reference whose parent does not exist in the target is reported by
``unmapped`` before anything is upserted.

Sequence moves are computed here but applied by the caller as the very
last statement before COMMIT: ``setval`` is not transactional, so it must
never run in a transaction that may still roll back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import psycopg
from psycopg import sql

from safesync.shared import rowhash
from safesync.shared.db import TableRef
from safesync.shared.rowdiff import Key

from .plan import SyncPlan, TableSpec, Translation, parent_key_text

CHUNK_KEYS = 10_000  # keys per COPY statement (the key list is sent inline)


def _chunks(keys: Sequence[Key], size: int = CHUNK_KEYS) -> Iterator[Sequence[Key]]:
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


def _select_by_keys(spec: TableSpec, keys: Sequence[Key], columns: sql.Composable) -> tuple[sql.Composable, list]:
    relation, params = rowhash.keys_relation(spec, keys)
    query = sql.SQL("select {cols} from {table} join {rel} on {match}").format(
        cols=columns, table=spec.from_item(), rel=relation, match=rowhash.keys_match(spec)
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
        sql.SQL("create temp table {} on commit drop as select {} from {} with no data").format(temp, cols, spec.from_item())
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


def _parent_match(tr: Translation, parent: str, staged: sql.Composable) -> sql.Composable:
    """Join condition: the target parent row whose natural key the staged
    text names."""
    if len(tr.parent_key) == 1:
        return sql.SQL("{} = {}::{}").format(sql.Identifier(parent, tr.parent_key[0]), staged, sql.SQL(tr.parent_key_types[0]))
    return sql.SQL("{} = {}").format(parent_key_text(tr, parent), staged)


def _staged_select(spec: TableSpec, temp: sql.Identifier) -> sql.Composable:
    """The staged rows as the target stores them: translated FK columns
    become the target parent's id."""
    exprs, joins = spec.translated(spec.columns, "s", on=_parent_match, value=lambda tr, parent: sql.Identifier(parent, tr.parent_column))
    return sql.SQL("select {} from {} as s{}").format(sql.SQL(", ").join(exprs), temp, joins)


def unmapped(tgt: psycopg.Connection, spec: TableSpec, temp: sql.Identifier, limit: int = 10) -> list[dict]:
    """Staged rows referencing a parent (by natural key) the target does not
    have: they cannot be written without inventing a reference."""
    found = []
    for tr in spec.translations:
        query = sql.SQL(
            "select {key}, s.{col} from {temp} as s left join {parent} as p on {match} "
            "where s.{col} is not null and p.{pcol} is null order by 1 limit {limit}"
        ).format(
            key=sql.SQL(" || ', ' || ").join(sql.SQL("{}::text").format(sql.Identifier("s", k)) for k in spec.key),
            col=sql.Identifier(tr.column),
            temp=temp,
            parent=tr.parent.ident,
            match=_parent_match(tr, "p", sql.Identifier("s", tr.column)),
            pcol=sql.Identifier(tr.parent_column),
            limit=sql.Literal(limit),
        )
        for key, ref in tgt.execute(query):
            found.append({"table": spec.name, "key": key, "column": tr.column, "references": f"{tr.parent.short} ({', '.join(tr.parent_key)}) = {ref}"})
    return found


def new_protected_references(tgt: psycopg.Connection, plan: SyncPlan, spec: TableSpec, temp: sql.Identifier, limit: int = 5) -> list[dict]:
    """Staged rows that would point a foreign key into a non-content table at
    a row the target row did not point at (a new row, or a changed
    reference). The row exists — the FK checks that — but its id comes from
    the source: in production it may name someone else (a dev author id that
    is a real user there). The protection proof cannot see this: nothing in
    the protected table is written."""
    found = []
    content = plan.content
    for fk in plan.target_fks:
        if fk.table != spec.table or fk.ref_table in content or not set(fk.columns) <= set(spec.columns):
            continue
        staged = sql.SQL(", ").join(sql.Identifier("s", c) for c in fk.columns)
        query = sql.SQL(
            "select count(*) over (), {key} from {temp} as s left join {table} as cur on {match} "
            "where num_nonnulls({staged}) = {n} and ({current}) is distinct from ({staged}) order by 2 limit {limit}"
        ).format(
            key=sql.SQL(" || ', ' || ").join(sql.SQL("{}::text").format(sql.Identifier("s", k)) for k in spec.key),
            temp=temp,
            table=spec.table.ident,
            match=sql.SQL(" and ").join(sql.SQL("{} = {}").format(sql.Identifier("cur", k), sql.Identifier("s", k)) for k in spec.key),
            staged=staged,
            n=sql.Literal(len(fk.columns)),
            current=sql.SQL(", ").join(sql.Identifier("cur", c) for c in fk.columns),
            limit=sql.Literal(limit),
        )
        rows = tgt.execute(query).fetchall()
        if rows:
            found.append({"table": spec.name, "columns": ", ".join(fk.columns), "references": fk.ref_table.short, "constraint": fk.name,
                          "rows": rows[0][0], "keys": [key for _, key in rows]})
    return found


def _distinct(update: tuple[str, ...], new_alias: str) -> sql.Composable:
    """``(cur cols) is distinct from (new cols)``, compared as text: the same
    notion of "equal" as the row hash, so equal rows are never updated."""
    return sql.SQL("({}) is distinct from ({})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("cur", c)) for c in update),
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(new_alias, c)) for c in update),
    )


def upsert(tgt: psycopg.Connection, spec: TableSpec, temp: sql.Identifier, keys: Sequence[Key]) -> int:
    """Merge the staged rows (those of ``keys``); returns rows inserted or
    actually updated."""
    if spec.match_on:
        return _update_then_insert(tgt, spec, temp)
    names = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    overriding = sql.SQL(" overriding system value") if spec.identity_always & set(spec.columns) else sql.SQL("")
    update = spec.update_columns
    if update:
        action = sql.SQL("do update set {sets} where {distinct}").format(
            sets=sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in update),
            distinct=_distinct(update, "excluded"),
        )
    else:
        action = sql.SQL("do nothing")
    if update:  # without columns to set, DO NOTHING overwrites nothing
        _lock_rows(tgt, spec, keys)
    query = sql.SQL("insert into {table} as cur ({names}){overriding} {rows} on conflict ({key}) {action}").format(
        table=spec.table.ident,
        names=names,
        overriding=overriding,
        rows=_staged_select(spec, temp),
        key=sql.SQL(", ").join(map(sql.Identifier, spec.key)),
        action=action,
    )
    return tgt.execute(query).rowcount


def _lock_rows(tgt: psycopg.Connection, spec: TableSpec, keys: Sequence[Key]) -> None:
    """Lock the target rows the staged rows (of ``keys``) will overwrite, as
    this transaction's snapshot sees them, before the upsert.

    The upsert alone misses a production DELETE committed after the
    snapshot (the compare judged the row against the ledger as it was):
    ``ON CONFLICT`` finds no live row, so the INSERT quietly brings the
    deleted row back with the source's content. ``FOR UPDATE`` in REPEATABLE
    READ raises a serialization failure for a row deleted or updated since
    the snapshot — the run fails as "target changed concurrently" and rolls
    back — and holds every other row until COMMIT. The keys are sent as
    arrays (as for deletes), not joined from the unanalysed temp table: the
    planner then looks each up through the key's index instead of hashing
    the whole table (a 1M-row table: 0.45 s for 10,000 rows, #18)."""
    for chunk in _chunks(list(keys)):
        relation, params = rowhash.keys_relation(spec, chunk)
        tgt.execute(
            sql.SQL("select from {table} as t join {rel} on {match} for update of t").format(
                table=spec.table.ident, rel=relation, match=rowhash.keys_match(spec)
            ),
            params,
        )


def _update_then_insert(tgt: psycopg.Connection, spec: TableSpec, temp: sql.Identifier) -> int:
    """A table matched on a natural key: update the rows the target has
    (keeping their ids), then insert the others. Two statements rather than
    one upsert, because an INSERT evaluates the id default (``nextval``) for
    every row, also those that turn into updates: ids would be burnt."""
    match = sql.SQL(" and ").join(sql.SQL("{} = {}").format(sql.Identifier("cur", k), sql.Identifier("s", k)) for k in spec.key)
    count = 0
    update = spec.update_columns
    if update:
        count += tgt.execute(
            sql.SQL("update {table} as cur set {sets} from ({rows}) as s where {match} and {distinct}").format(
                table=spec.table.ident,
                sets=sql.SQL(", ").join(sql.SQL("{0} = s.{0}").format(sql.Identifier(c)) for c in update),
                rows=_staged_select(spec, temp),
                match=match,
                distinct=_distinct(update, "s"),
            )
        ).rowcount
    names = sql.SQL(", ").join(map(sql.Identifier, spec.columns))
    overriding = sql.SQL(" overriding system value") if spec.identity_always & set(spec.columns) else sql.SQL("")
    count += tgt.execute(
        sql.SQL(
            "insert into {table} ({names}){overriding} select {names} from ({rows}) as s "
            "where not exists (select from {table} as cur where {match})"
        ).format(table=spec.table.ident, names=names, overriding=overriding, rows=_staged_select(spec, temp), match=match)
    ).rowcount
    return count


def delete_rows(tgt: psycopg.Connection, spec: TableSpec, keys: Sequence[Key], where: sql.Composable = sql.SQL("true")) -> int:
    """Delete the rows of ``keys`` that match ``where`` (on alias ``t``)."""
    deleted = 0
    for chunk in _chunks(list(keys)):
        relation, params = rowhash.keys_relation(spec, chunk)
        query = sql.SQL("delete from {table} as t using {rel} where {match} and {where}").format(
            table=spec.table.ident, rel=relation, match=rowhash.keys_match(spec), where=where
        )
        deleted += tgt.execute(query, params).rowcount
    return deleted


def unreferenced(
    plan: SyncPlan, spec: TableSpec, alias: str = "t", leaving: Callable[[TableRef], sql.Composable | None] = lambda table: None
) -> sql.Composable:
    """``alias``, a row of ``spec``'s table, is referenced by no content row
    now: the writer deletes such rows *before* it writes the others.

    PostgreSQL checks a unique constraint that is not deferrable row by row,
    so a row deleted after the upserts still holds its values while they
    run: a row recreated in the source under a new id with the same slug
    (or an undo putting back a row the sync deleted, beside the one it
    inserted in its place) would fail on "duplicate key". Deleting first is
    safe only for rows nothing else still points at — content rows the
    upserts will re-point away keep their parent until after the upserts
    (then deleted, children first); protected references were refused
    before any write. ``leaving(child)``: which rows of a child table (as
    ``safesync_ref``) are themselves about to be deleted, so do not count."""
    tests = []
    for fk in plan.referencing(spec.table):
        if fk.table not in plan.content:
            continue
        match = [sql.SQL("{} = {}").format(sql.Identifier("safesync_ref", col), sql.Identifier(alias, ref)) for col, ref in zip(fk.columns, fk.ref_columns)]
        going = leaving(fk.table)
        if going is not None:
            match.append(sql.SQL("not ({})").format(going))
        tests.append(sql.SQL("not exists (select from {} as safesync_ref where {})").format(fk.table.ident, sql.SQL(" and ").join(match)))
    return sql.SQL(" and ").join(tests) if tests else sql.SQL("true")


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
    out: dict[Key, tuple] = {}
    for chunk in _chunks(list(keys)):
        query, params = _select_by_keys(spec, chunk, cols)
        out.update((tuple(r[:n]), tuple(r[n:])) for r in conn.execute(query, params))
    return out


@dataclass(frozen=True)
class SequenceMove:
    """Where one sequence stands against its column's ids. For a descending
    sequence (negative increment) "forward" is downwards: ``max_id`` is then
    the table's smallest id and ``current`` the lowest value handed out."""

    table: str
    column: str
    sequence: str  # schema-qualified, quoted where needed
    current: int  # the furthest value handed out so far (start - increment if never used)
    max_id: int  # the table's id furthest along the sequence's direction
    descending: bool = False
    limit: int | None = None  # the sequence's maxvalue (minvalue when descending)
    may_set: bool = True  # the role holds UPDATE on the sequence (setval needs it)

    @property
    def moves(self) -> bool:
        return self.max_id < self.current if self.descending else self.max_id > self.current

    @property
    def problem(self) -> str | None:
        """Why ``setval`` would fail: the id lies past the sequence's bound,
        or the role may not set it. It must be known before the proof — a
        failing ``setval`` after it would abort the transaction once earlier
        sequences had already moved (they are not transactional)."""
        if not self.moves:
            return None
        if self.limit is not None and (self.max_id < self.limit if self.descending else self.max_id > self.limit):
            bound = "minvalue" if self.descending else "maxvalue"
            return f"{self.table}.{self.column} holds {self.max_id}, past sequence {self.sequence}'s {bound} {self.limit}"
        if not self.may_set:
            return f"{self.table}.{self.column} holds {self.max_id}, but the role lacks UPDATE on sequence {self.sequence} to move it there"
        return None

    def as_row(self) -> dict:
        return {
            "table": self.table,
            "column": self.column,
            "sequence": self.sequence,
            "current": self.current,
            "max_id": self.max_id,
            "set_to": self.max_id if self.moves else None,
        }


_SEQUENCE = "(select {field} from pg_catalog.pg_sequence where seqrelid = {name}::regclass)"
_INCREMENT = _SEQUENCE.replace("{field}", "seqincrement")
_HIGH_WATER = "(select case when is_called then last_value else last_value - " + _INCREMENT + " end from {seq})"


def sequence_moves(tgt: psycopg.Connection, spec: TableSpec) -> list[SequenceMove]:
    """Where each sequence the table's columns draw from stands against the table's
    furthest id in the sequence's direction — the largest, or the smallest for a
    descending sequence — after this transaction's writes. Only columns that hold
    the values handed out (``TableSpec.sequence_holders``) are compared; see
    ``unmovable_sequences`` for the others."""
    out = []
    for column, seq in spec.sequences:
        if column not in spec.sequence_holders:
            continue
        query = sql.SQL(
            "select max({col})::bigint, min({col})::bigint, " + _HIGH_WATER + ", " + _INCREMENT + " < 0, "
            + _SEQUENCE.replace("{field}", "seqmax") + ", " + _SEQUENCE.replace("{field}", "seqmin")
            + ", pg_catalog.has_sequence_privilege({name}, 'UPDATE') from {table}"
        ).format(col=sql.Identifier(column), seq=sql.SQL(seq), name=sql.Literal(seq), table=spec.table.ident)
        max_id, min_id, current, descending, seqmax, seqmin, may_set = tgt.execute(query).fetchone()
        if max_id is not None:
            far, limit = (min_id, seqmin) if descending else (max_id, seqmax)
            out.append(SequenceMove(spec.name, column, seq, current, far, descending, limit, may_set))
    return out


def unmovable_sequences(spec: TableSpec) -> list[str]:
    """The table's columns that draw from a sequence inside an expression
    (``'SKU-' || nextval('sku_seq')``): their synced values say nothing about
    how far the sequence must move, so the sync leaves it where it is."""
    return [f"{spec.name}.{column} ({seq})" for column, seq in spec.sequences if column not in spec.sequence_holders]


def move_sequences(tgt: psycopg.Connection, moves: Sequence[SequenceMove]) -> None:
    """Move sequences forward only (downwards for a descending one).
    ``greatest``/``least`` re-reads the sequence in the same statement, so a
    value the application drew meanwhile is never handed out again."""
    for move in moves:
        if move.moves:
            query = sql.SQL("select pg_catalog.setval({name}::regclass, {pick}({max_id}, " + _HIGH_WATER + "))").format(
                name=sql.Literal(move.sequence),
                pick=sql.SQL("least" if move.descending else "greatest"),
                max_id=sql.Literal(move.max_id),
                seq=sql.SQL(move.sequence),
            )
            tgt.execute(query)


def sequences_drawn(tgt: psycopg.Connection, plan: SyncPlan) -> list[str]:
    """The content tables' sequences this transaction drew values from
    (``nextval``, e.g. the id default of a new row of a table matched on a
    natural key): ``nextval`` takes RowExclusiveLock on the sequence, kept to
    the end of the transaction. Read before a rollback: ROLLBACK does not
    give those values back, so a dry-run or refused run that drew them must
    not say that nothing changed."""
    names = sorted({seq for spec in plan.tables for _, seq in spec.sequences})
    if not names:
        return []
    rows = tgt.execute(
        """
        select s.name from unnest(%s::text[]) as s(name)
        where exists (select from pg_catalog.pg_locks l
                      where l.locktype = 'relation' and l.pid = pg_catalog.pg_backend_pid()
                        and l.relation = pg_catalog.to_regclass(s.name) and l.mode = 'RowExclusiveLock')
        order by 1
        """,
        [names],
    ).fetchall()
    return [name for (name,) in rows]


def sequences_note(drawn: Sequence[str]) -> str:
    """What a rollback leaves behind, for a summary: nothing, or the
    sequences it drew values from."""
    if not drawn:
        return ""
    return f" (except sequence values drawn from {', '.join(drawn)}: sequences are not transactional)"
