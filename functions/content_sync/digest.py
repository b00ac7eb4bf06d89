"""The plan digest: what a reviewed dry-run promises a later sync will do.

The canonical plan is newline-delimited JSON (sorted keys, no spaces): one
header line (source, target, delete_missing, adopt, and per table in FK
order its key, compared columns, match_on translations, on_conflict, the
ledger's status and whether the sync re-seeds it), then per table, rows
sorted by key: per row to write ``[table, "write", key, source hash]``,
per row overwritten ``[table, "overwrite", key, target hash]``, per row
deleted ``[table, "delete", key, target hash]``, per conflict ``[table,
"conflict", key, source hash, target hash, ledger hash, resolution]``, per
row still kept from an earlier conflict ``[table, "kept", key]``, per row
adopted without history ``[table, "adopt", key]``, per key collision and
unconfirmed row ``[table, "collision" | "unconfirmed", key]``. The digest
is its sha256, computed while streaming, so a plan of a million rows needs
no extra memory. Any change on either side (or in the ledger) that alters
what would be written, overwritten, deleted, kept or recorded changes the
digest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

from .conflicts import TableDecisions
from .plan import SyncPlan


# one encoder for every line: ``json.dumps`` with options builds a new one per call (a third of the digest's time)
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _line(obj: Any) -> bytes:
    return _ENCODE(obj).encode() + b"\n"


def plan_digest(plan: SyncPlan, decisions: Sequence[TableDecisions], adopt: bool) -> str:
    h = hashlib.sha256()
    h.update(
        _line(
            {
                "source": plan.source,
                "target": plan.target,
                "delete_missing": plan.delete_missing,
                "adopt": adopt,
                "tables": [
                    {
                        "table": str(d.spec.table),
                        "key": list(d.spec.key),
                        "columns": list(d.spec.columns),
                        "translations": d.spec.signature["translations"],
                        "on_conflict": d.spec.on_conflict,
                        "ledger": d.ledger.status,
                        "reseed": d.records.reseed,
                    }
                    for d in decisions
                ],
            }
        )
    )
    for d in decisions:
        name = str(d.spec.table)
        changed = d.diff.changed
        for key in sorted(d.writes):
            h.update(_line([name, "write", list(key), d.writes[key]]))
        for key in sorted(k for k in d.writes if k in changed):
            h.update(_line([name, "overwrite", list(key), changed[key][1]]))
        for key in sorted(d.deletes):
            h.update(_line([name, "delete", list(key), d.deletes[key]]))
        for c in d.conflicts:
            h.update(_line([name, "conflict", list(c.key), c.source_hash, c.target_hash, c.base.row_hash, c.resolution]))
        for kind, keys in (("kept", d.kept), ("adopt", d.adopted), ("collision", d.collisions), ("unconfirmed", [k for k, _ in d.unconfirmed])):
            for key in sorted(keys):
                h.update(_line([name, kind, list(key)]))
    return h.hexdigest()
