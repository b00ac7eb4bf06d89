"""The plan digest: what a reviewed dry-run promises a later sync will do.

The canonical plan is newline-delimited JSON (sorted keys, no spaces): one
header line (source, target, delete_missing, and per table in FK order its
key and compared columns), then one line per row to write
``[table, "write", key, source hash]``, per row overwritten
``[table, "overwrite", key, target hash]`` and, with delete_missing, per row
deleted ``[table, "delete", key, target hash]`` — rows sorted by key. The
digest is its sha256, computed while streaming, so a plan of a million rows
needs no extra memory. Any change on either side that alters what would be
written, overwritten or deleted changes the digest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

from .diff import TableDiff
from .plan import SyncPlan


def _line(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def plan_digest(plan: SyncPlan, diffs: Sequence[TableDiff]) -> str:
    h = hashlib.sha256()
    h.update(
        _line(
            {
                "source": plan.source,
                "target": plan.target,
                "delete_missing": plan.delete_missing,
                "tables": [{"table": str(s.table), "key": list(s.key), "columns": list(s.columns)} for s in plan.tables],
            }
        )
    )
    for diff in diffs:
        name = str(diff.spec.table)
        writes = {**diff.new, **{k: v[0] for k, v in diff.changed.items()}}
        for key in sorted(writes):
            h.update(_line([name, "write", list(key), writes[key]]))
        for key in sorted(diff.changed):
            h.update(_line([name, "overwrite", list(key), diff.changed[key][1]]))
        if plan.delete_missing:
            for key in sorted(diff.extra):
                h.update(_line([name, "delete", list(key), diff.extra[key]]))
    return h.hexdigest()
