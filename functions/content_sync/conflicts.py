"""Three-way classification of every row that differs between source and
target, against the ledger (the row's hash when safesync last wrote or
confirmed it).

For a row with a ledger entry, each side is compared with the entry:
unchanged, edited, created or deleted since. If only the source moved, the
change is plain (write, or delete with ``delete_missing``). If the target
moved — production edited or deleted the row since the last sync — and the
two sides still differ, it is a **conflict**, resolved by the table's
``on_conflict``: ``source`` applies dev's version (and the ledger records
it), ``target`` keeps production's (the ledger records it as ``kept``, with
the declined source version, so the same pair does not come back as a
conflict until one side moves again), ``fail`` (default) refuses the sync.

A row without an entry is judged by whether the table's ledger is
established (a sync with the ledger has completed under today's columns):

- established: every row safesync ever wrote or confirmed has an entry, so
  a target row without one was created in the target. If the source has a
  *different* row under the same key, the two are unrelated rows that
  happen to share a key: a **key collision**, always refused (re-key the
  row in dev, or match the table on a natural key with ``match_on``). A
  target-only row without entry was never synced: it is left alone, even
  with ``delete_missing``.
- not established (first run, or columns changed since): there is no
  history to tell an edit from a collision, so a differing row (and, with
  ``delete_missing``, a target-only row) is **unconfirmed**: written (or
  deleted) only with ``adopt``, otherwise reported and the sync refused.

Rows only in the source without an entry are plain inserts in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from safesync.shared.rowdiff import Key, TableDiff

from .ledger import Entry, LedgerWrites, TableLedger
from .plan import TableSpec


@dataclass(frozen=True)
class Conflict:
    key: Key
    source_hash: int | None  # None: no such row in the source
    target_hash: int | None
    base: Entry
    source_change: str  # since the ledger entry: unchanged | edited | created | deleted
    target_change: str
    resolution: str  # source | target | fail


@dataclass
class TableDecisions:
    """What a sync does with one table's differing rows."""

    diff: TableDiff
    ledger: TableLedger
    writes: dict[Key, int] = field(default_factory=dict)  # key -> source hash, upserted
    deletes: dict[Key, int] = field(default_factory=dict)  # key -> target hash, deleted
    conflicts: list[Conflict] = field(default_factory=list)
    collisions: list[Key] = field(default_factory=list)
    unconfirmed: list[tuple[Key, str]] = field(default_factory=list)  # (key, "changed" | "delete")
    adopted: list[Key] = field(default_factory=list)
    kept: list[Key] = field(default_factory=list)  # still kept after an earlier on_conflict = "target"
    target_only: list[Key] = field(default_factory=list)  # never synced: left alone
    records: LedgerWrites = field(default_factory=LedgerWrites)

    @property
    def spec(self) -> TableSpec:
        return self.diff.spec

    @property
    def failing(self) -> list[Conflict]:
        return [c for c in self.conflicts if c.resolution == "fail"]

    @property
    def blocked(self) -> bool:
        return bool(self.collisions or self.unconfirmed or self.failing)

    def unresolved(self) -> list[Key]:
        """Keys that still differ after the sync (written neither way)."""
        done = {*self.writes, *self.deletes}
        return [k for k in (*self.diff.new, *self.diff.changed, *self.diff.extra) if k not in done]


def _change(now: int | None, base: int | None) -> str:
    if now == base:
        return "unchanged"
    if now is None:
        return "deleted"
    if base is None:
        return "created"
    return "edited"


def classify(diff: TableDiff, ledger: TableLedger, *, adopt: bool, delete_missing: bool) -> TableDecisions:
    out = TableDecisions(diff, ledger)
    rows: list[tuple[Key, int | None, int | None]] = [(k, s, None) for k, s in diff.new.items()]
    rows += [(k, s, t) for k, (s, t) in diff.changed.items()]
    rows += [(k, None, t) for k, t in diff.extra.items()]
    for key, s, t in sorted(rows, key=lambda r: r[0]):
        entry = ledger.entries.get(key) if ledger.usable else None
        if entry is None:
            _without_entry(out, key, s, t, established=ledger.usable, adopt=adopt, delete_missing=delete_missing)
            continue
        if s is None and not delete_missing:
            continue  # deleted in dev: left alone unless delete_missing
        base_source = entry.row_hash if entry.state == "synced" else entry.declined_hash
        target_change, source_change = _change(t, entry.row_hash), _change(s, base_source)
        if target_change == "unchanged" and (entry.state == "synced" or source_change == "unchanged"):
            if entry.state == "kept":
                out.kept.append(key)
            else:
                _take_source(out, key, s, t)
            continue
        resolution = diff.spec.on_conflict
        out.conflicts.append(Conflict(key, s, t, entry, source_change, target_change, resolution))
        if resolution == "source":
            _take_source(out, key, s, t)
        elif resolution == "target":
            out.records.kept[key] = (t, s)
    out.records.reseed = not (ledger.usable and ledger.consistent)
    out.records.target_rows = diff.target_rows
    return out


def _take_source(out: TableDecisions, key: Key, s: int | None, t: int | None) -> None:
    if s is None:
        out.deletes[key] = t
        out.records.removed.append(key)
    else:
        out.writes[key] = s  # recorded in the ledger once verified on the target


def _without_entry(out: TableDecisions, key: Key, s: int | None, t: int | None, *, established: bool, adopt: bool, delete_missing: bool) -> None:
    if t is None:
        out.writes[key] = s  # new in the source: nothing to overwrite
    elif s is None:
        if not delete_missing:
            return
        if established:
            out.target_only.append(key)  # created in the target: never deleted by a sync
        elif adopt:
            out.adopted.append(key)
            out.deletes[key] = t
        else:
            out.unconfirmed.append((key, "delete"))
    elif established:
        out.collisions.append(key)
    elif adopt:
        out.adopted.append(key)
        out.writes[key] = s
    else:
        out.unconfirmed.append((key, "changed"))
