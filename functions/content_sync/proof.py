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

Tables in the ``safesync`` schema get no exemption: nothing in a sync
transaction writes them (locks and QStash de-duplication use their own
connections), so a write there is as suspicious as any other. Bookkeeping a
later feature writes in the same transaction must be allowed by name.
Temporary tables (the staged rows) are ignored.
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


def allowed_relids(conn: psycopg.Connection, tables: Iterable[TableRef]) -> set[int]:
    """OIDs the sync may write: the content tables and their partitions."""
    relids: set[int] = set()
    for table in tables:
        name = table.ident.as_string(conn)
        # pg_partition_tree lists nothing for a plain table: add the table itself
        rows = conn.execute(
            "select %s::regclass::oid union select relid::oid from pg_partition_tree(%s::regclass)", [name, name]
        ).fetchall()
        relids |= {r[0] for r in rows}
    return relids


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
