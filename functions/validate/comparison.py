"""``compare``: schema diff + data diff of two databases as one
``Comparison`` — what ``validate --against``, the staging clone's proof and
migrate's rehearsal report.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import psycopg

from safesync.shared.db import TableRef
from safesync.shared.report import Report

from .data_diff import MAX_KEYS, DataDiff, data_diff
from .schema_diff import SchemaDiff, schema_diff


@dataclass
class Comparison:
    """Schema diff + data diff of two databases."""

    schema: SchemaDiff
    data: DataDiff

    @property
    def identical(self) -> bool:
        return self.schema.identical and self.data.identical

    def into_report(self, report: Report, a_name: str, b_name: str) -> None:
        """Tables and details for a report (the caller sets the status)."""
        report.tables["schema differences"] = self.schema.rows(a_name, b_name)
        report.tables["data differences"] = self.data.rows(a_name, b_name)
        report.tables["not compared"] = self.schema.not_compared_rows(a_name, b_name) + [
            {"kind": f"columns of {t.table}", "columns": ", ".join(t.excluded_columns), "compared": "no (masked)"}
            for t in self.data.tables
            if t.excluded_columns
        ] + [
            {"kind": f"data of {t.table}", "compared": f"no ({t.note.split(':')[0]})"} for t in self.data.tables if t.status == "not compared"
        ]
        report.details["comparison"] = {
            "identical": self.identical,
            "schema_identical": self.schema.identical,
            "data_identical": self.data.identical,
            "schema_differences": len(self.schema.differences),
            "tables_differing": len(self.data.differing),
            "compared_kinds": {k: {a_name: a, b_name: b} for k, (a, b) in self.schema.compared.items()},
            "tables_compared": len(self.data.tables),
        }

    def summary(self, a_name: str, b_name: str) -> str:
        if self.identical:
            return f"{a_name} and {b_name} are identical ({len(self.data.tables)} tables, schema and data)"
        parts = []
        if not self.schema.identical:
            parts.append(f"{len(self.schema.differences)} schema difference(s)")
        if not self.data.identical:
            parts.append(f"{len(self.data.differing)} table(s) with different data")
        return f"{a_name} and {b_name} differ: " + ", ".join(parts)


def compare(
    conn_a: psycopg.Connection,
    conn_b: psycopg.Connection,
    schemas: Sequence[str],
    *,
    exclude_columns: dict[TableRef, Iterable[str]] | None = None,
    count_only: Mapping[TableRef, str] | None = None,
    progress: Callable[[str], None] | None = None,
    limit: int = MAX_KEYS,
) -> Comparison:
    """Schema and data diff of ``schemas`` (connections from ``shared.db.connect``:
    pinned settings make the row hashes comparable); ``limit`` as ``data_diff``'s.

    Each side is read in one snapshot (``_one_snapshot``)."""
    with _one_snapshot(conn_a), _one_snapshot(conn_b):
        schema = schema_diff(conn_a, conn_b, schemas)
        data = data_diff(conn_a, conn_b, schemas, exclude_columns=exclude_columns, count_only=count_only, progress=progress, limit=limit)
    return Comparison(schema, data)


@contextmanager
def _one_snapshot(conn: psycopg.Connection) -> Iterator[None]:
    """A REPEATABLE READ, read-only transaction around the whole comparison
    of a side the caller has not put in a transaction of its own (a caller's
    transaction, say the clone's held source snapshot, is used as it is).

    Read committed, every query sees the database anew: a table hashed
    before and another after a concurrent transaction could each match the
    other side while the database never did as a whole — "identical" about
    a state that never existed."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        yield
        return
    saved = conn.isolation_level, conn.read_only
    conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
    try:
        with conn.transaction():
            yield
    finally:
        conn.isolation_level, conn.read_only = saved
