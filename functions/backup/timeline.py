"""One database's backups as a person wants to see them: which are kept and
by which retention rule, how their size moves, when the last verify and the
last restore drill ran and how they ended.

Read-only: it applies the same retention policy as prune, without deleting.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from safesync.shared.config import Settings

from .catalog import list_backups
from .prune import policy_of
from .retention import Candidate, plan_retention

RULES = ("newest", "daily", "weekly", "monthly", "predeploy", "presync", "premigrate", "safety")


def _last(result: dict[str, Any] | None, backup_id: str) -> dict[str, Any] | None:
    if not result:
        return None
    return {"backup": backup_id, "at": result.get("at"), "ok": bool(result.get("ok")), "problems": result.get("problems") or []}


def backup_timeline(settings: Settings, db: str, *, limit: int = 60) -> dict[str, Any]:
    """The ``limit`` newest complete backups of ``db`` (newest first), each
    with the rules that keep it (none: prune will delete it), how many
    backups each rule keeps, and the newest verify and drill results."""
    backups = list_backups(settings, db)
    plan = plan_retention([Candidate(b.id, b.started_at, b.kind, b.partial) for b in backups], policy_of(settings))
    rules = {b.id: sorted({r.split(" ", 1)[0] for r in plan.keep.get(b.id, [])}, key=RULES.index) for b in backups}
    verified = next((b for b in backups if b.verification), None)
    drilled = next((b for b in backups if b.drill), None)
    return {
        "db": db,
        "complete": len(backups),
        "kept": dict(Counter(rule for names in rules.values() for rule in names)),
        "to_prune": len(plan.delete),
        "last_verify": _last(verified.verification, verified.id) if verified else None,
        "last_drill": _last(drilled.drill, drilled.id) if drilled else None,
        "backups": [
            {
                "id": b.id,
                "kind": b.kind,
                "started_at": b.started_at.isoformat(),
                "size": b.size,
                "kept_by": rules[b.id],
                "verified": (b.verification or {}).get("ok"),
                "drill": (b.drill or {}).get("ok"),
            }
            for b in backups[:limit]
        ],
    }
