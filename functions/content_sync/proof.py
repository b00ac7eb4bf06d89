"""The protection proof: evidence, taken inside the sync transaction, that
no table outside the content list was written by it.

PostgreSQL counts, per transaction, the rows each table had inserted,
updated and deleted (``pg_stat_xact_user_tables``) — including rows written
by triggers and by ON DELETE CASCADE / SET NULL actions, which run inside the
same transaction. The proof snapshots those counters, plus each table's
file node (a TRUNCATE or table rewrite changes it without counting rows),
when the transaction starts and again after the last write; any delta on a
table that is not content (or a partition of one) fails the proof and the
caller rolls back.

Tables in the ``safesync`` schema get no exemption: locks and QStash
de-duplication use their own connections, so a write there is as
suspicious as any other — except the content ledger, which the sync writes
in its own transaction and the caller allows by OID (that one table, not
the schema). Temporary tables (the staged rows) are ignored.

The same counters tell the post-sync check how many rows of each content
table the transaction touched (``writes``): when that is exactly what the
sync's own statements reported, no trigger, rule or cascade changed any
other content row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import psycopg

from safesync.shared.db import TableRef

_SNAPSHOT = """
select s.relid, s.schemaname, s.relname, s.n_tup_ins, s.n_tup_upd, s.n_tup_del, pg_relation_filenode(s.relid)
from pg_stat_xact_user_tables s join pg_class c on c.oid = s.relid
where c.relpersistence <> 't'
"""


@dataclass(frozen=True)
class Snapshot:
    rows: dict[int, tuple[str, str, int, int, int, int | None]]  # relid -> (schema, name, ins, upd, del, filenode)


@dataclass
class ProofResult:
    checked: int
    violations: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # one per checked table, for the report

    @property
    def ok(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        return ", ".join(
            f"{v['table']} ({', '.join(f'{v[k]} {k}' for k in ('inserted', 'updated', 'deleted') if v[k])}"
            + ("; truncated or rewritten" if v["rewritten"] else "")
            + ")"
            for v in self.violations
        )


def take(conn: psycopg.Connection) -> Snapshot:
    """Counters of the current transaction for every table of the database."""
    return Snapshot({r[0]: tuple(r[1:]) for r in conn.execute(_SNAPSHOT)})


def tree_relids(conn: psycopg.Connection, table: TableRef) -> set[int]:
    """The table's OID and those of its partitions."""
    name = table.ident.as_string(conn)
    # pg_partition_tree lists nothing for a plain table: add the table itself
    rows = conn.execute("select %s::regclass::oid union select relid::oid from pg_partition_tree(%s::regclass)", [name, name]).fetchall()
    return {r[0] for r in rows}


def allowed_relids(conn: psycopg.Connection, tables: Iterable[TableRef]) -> set[int]:
    """OIDs the sync may write: the content tables and their partitions."""
    relids: set[int] = set()
    for table in tables:
        relids |= tree_relids(conn, table)
    return relids


def writes(before: Snapshot, after: Snapshot, relids: set[int]) -> tuple[int, int, bool]:
    """Rows inserted or updated, rows deleted, and whether any file node
    changed (TRUNCATE, rewrite), in ``relids`` by this transaction."""
    upserted = deleted = 0
    rewritten = False
    for relid in relids:
        if relid not in after.rows:
            continue
        schema, name, ins, upd, dele, node = after.rows[relid]
        _, _, ins0, upd0, del0, node0 = before.rows.get(relid, (schema, name, 0, 0, 0, node))
        upserted += (ins - ins0) + (upd - upd0)
        deleted += dele - del0
        rewritten |= node != node0
    return upserted, deleted, rewritten


def verify(before: Snapshot, after: Snapshot, allowed: set[int]) -> ProofResult:
    """Compare two snapshots; every non-allowed table must be unchanged."""
    result = ProofResult(checked=0)
    for relid, (schema, name, ins, upd, dele, node) in sorted(after.rows.items(), key=lambda kv: kv[1][:2]):
        if relid in allowed:
            continue
        _, _, ins0, upd0, del0, node0 = before.rows.get(relid, (schema, name, 0, 0, 0, node))
        row = {
            "table": TableRef(schema, name).short,
            "inserted": ins - ins0,
            "updated": upd - upd0,
            "deleted": dele - del0,
            "rewritten": node != node0,
        }
        result.checked += 1
        result.rows.append(row)
        if row["inserted"] or row["updated"] or row["deleted"] or row["rewritten"]:
            result.violations.append(row)
    return result
