"""What of the data already there a migration deletes or overwrites.

A rehearsal passes only when the migration keeps every existing row and
value, or ``[migrate] allow_data_loss`` names where losing them is meant
(a test suite's "the migration ran" is no proof that users' data survived
it). Read from the rehearsal's comparison (target vs rehearsal) and the
target itself:

- a table that is gone and held rows;
- a column that is gone and held a value (not NULL) in some row;
- rows of a table both sides have that the rehearsal lacks, or holds with
  other values in the columns both sides have (an ``UPDATE`` of existing
  data: the old values are gone);
- a table whose rows could not all be matched — no primary key, or more
  than ``LIMIT`` differing rows: a loss is not ruled out, so it counts.

New tables, new columns and new rows are not a loss; a type change that
keeps every value's text (``int`` → ``bigint``, ``varchar(n)`` → ``text``)
compares equal. A rename looks like a loss (the old name is gone): listing
the old name accepts it. Masked columns and structure-only tables
(``[staging_clone]``) have no real data in the rehearsal, so rewrites of
them cannot be seen; dropping them can, and counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import psycopg
from psycopg import sql

from safesync.shared.db import TableRef, list_tables, table_shapes

# differing rows of one table the rehearsal's comparison finds before it
# stops: enough to prove "rows were only added" for any real data migration
LIMIT = 100_000


@dataclass(frozen=True)
class Loss:
    table: TableRef
    column: str | None  # a dropped column; None: the table's rows
    what: str

    @property
    def object(self) -> str:
        return f"{self.table}.{self.column}" if self.column else str(self.table)

    def accepted_by(self, allowed: Sequence[str], shared: frozenset[str] = frozenset()) -> bool:
        """Whether an ``allow_data_loss`` entry names this table (any loss
        in it) or this column: ``users``, ``public.users``, ``users.email``,
        ``public.users.email``. ``shared``: table names that several
        compared schemas have (``shared_names``): for those only the
        schema-qualified entries count — ``users``, meant for
        ``public.users``, must not also accept emptying Supabase's
        ``auth.users``."""
        names = {str(self.table)}
        if self.table.name not in shared:
            names.add(self.table.name)
        if self.column:
            names.add(f"{self.table}.{self.column}")
            if self.table.name not in shared:
                names.add(f"{self.table.name}.{self.column}")
        return any(entry in names for entry in allowed)

    def row(self, accepted: bool) -> dict[str, Any]:
        return {"object": self.object, "loss": self.what, "accepted": "yes (allow_data_loss)" if accepted else "no"}


def shared_names(target: psycopg.Connection, schemas: Sequence[str]) -> frozenset[str]:
    """Names of the target's tables that more than one of ``schemas`` has."""
    seen: dict[str, int] = {}
    for table in list_tables(target, schemas):
        seen[table.name] = seen.get(table.name, 0) + 1
    return frozenset(name for name, count in seen.items() if count > 1)


def find(comparison: Any, target: psycopg.Connection, rehearsal: psycopg.Connection, schemas: Sequence[str]) -> list[Loss]:
    """Every loss of existing data the rehearsal shows (``comparison`` is
    ``validate.compare(target, rehearsal, schemas, limit=LIMIT)``)."""
    before, after = set(list_tables(target, schemas)), set(list_tables(rehearsal, schemas))
    losses = []
    for table in sorted(before - after):
        rows = target.execute(sql.SQL("select count(*) from {}").format(table.ident)).fetchone()[0]
        if rows:
            losses.append(Loss(table, None, f"table dropped with its {rows} row(s)"))
    shapes_before, shapes_after = table_shapes(target, schemas), table_shapes(rehearsal, schemas)
    for table in sorted(before & after):
        kept = {name for name, _, _ in shapes_after[table][0]}
        for column in (name for name, _, _ in shapes_before[table][0] if name not in kept):
            held = target.execute(
                sql.SQL("select count(*) from {} where {} is not null").format(table.ident, sql.Identifier(column))
            ).fetchone()[0]
            if held:
                losses.append(Loss(table, column, f"column dropped with {held} value(s)"))
    by_name = {str(t): t for t in before & after}
    for diff in comparison.data.tables:
        table = by_name.get(diff.table)
        if table is not None and diff.status == "differs":
            losses += _rows_lost(table, diff)
    return losses


def _rows_lost(table: TableRef, diff: Any) -> list[Loss]:
    """The loss of one table's rows, from its data diff (target = A)."""
    at_least = "" if diff.complete else "at least "
    lost = []
    if diff.found.get("only in A"):  # without a key an UPDATE is a row gone and another one new
        lost.append(f"{at_least}{diff.found['only in A']} row(s) deleted" + ("" if diff.keyed else " or changed (no primary key)"))
    if diff.found.get("differs"):
        lost.append(f"{at_least}{diff.found['differs']} row(s) with existing values changed")
    # The rows named must account for the change in the row count: a
    # comparison that found fewer deletions than rows went missing (as the
    # uuid range bug once made it) must not pass as "no loss".
    unaccounted = (diff.rows_a or 0) - (diff.rows_b or 0) - diff.found.get("only in A", 0) + diff.found.get("only in B", 0)
    if diff.complete and unaccounted > 0:
        lost.append(f"{unaccounted} row(s) gone that the comparison could not name: deletions are not ruled out")
    if not lost and not diff.complete:  # only new rows found so far: the rest was not examined
        lost.append(f"more than {LIMIT} rows differ: deletions are not ruled out" if diff.keyed
                    else "more rows differ than were examined (no primary key): deletions are not ruled out")
    if not lost:
        return []
    examples = [k for k in diff.first_keys if not k.startswith("only in B")][:3]
    return [Loss(table, None, "; ".join(lost) + (f" (e.g. {'; '.join(examples)})" if examples else ""))]
