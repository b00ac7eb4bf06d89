"""Pruning: apply the retention policy to complete backups and remove
leftovers of interrupted ones.

Complete backups are judged only by their manifests (``retention``).
Leftovers — objects without a manifest, or a manifest whose dump is gone —
have no manifest to date them, so their newest upload time is used, and
they go only once older than ``backup.incomplete_grace_hours`` (a backup
still being written is a leftover too, until its manifest lands). A
manifest we cannot read is never deleted automatically: it is reported.
A backup is deleted manifest first, so an interrupted prune leaves a
leftover (cleaned next time), never something that looks complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from safesync.shared.config import Settings
from safesync.shared.log import get_logger
from safesync.shared.report import utcnow

from .catalog import scan
from .retention import Candidate, Policy, plan_retention

log = get_logger("backup")


@dataclass
class PruneResult:
    dry_run: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # backup ids (complete and leftovers)
    kept: int = 0
    reasons: dict[str, list[str]] = field(default_factory=dict)  # kept id -> why, in full
    temp_removed: int = 0
    warnings: list[str] = field(default_factory=list)

    def merge(self, other: "PruneResult") -> None:
        self.rows += other.rows
        self.deleted += other.deleted
        self.kept += other.kept
        self.reasons.update(other.reasons)
        self.warnings += other.warnings

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        text = f"{verb} {len(self.deleted)} backup(s) or leftover(s), kept {self.kept}"
        if self.temp_removed:
            text += f"; removed {self.temp_removed} stale temp file(s)"
        return text


def policy_of(settings: Settings) -> Policy:
    cfg = settings.config.backup
    return Policy(cfg.keep_daily, cfg.keep_weekly, cfg.keep_monthly, cfg.keep_predeploy, cfg.keep_event)


def prune_database(
    settings: Settings, db: str, *, dry_run: bool = False, now: datetime | None = None
) -> PruneResult:
    """Prune the backups of one configured database."""
    now = now or utcnow()
    storage = settings.storage
    grace = timedelta(hours=settings.config.backup.incomplete_grace_hours)
    catalog = scan(storage, settings.check_database(db))
    plan = plan_retention([Candidate(i.id, i.started_at, i.kind, i.partial) for i in catalog.complete], policy_of(settings))
    if catalog.complete and catalog.complete[0].id not in plan.keep:  # pragma: no cover - retention guarantees it
        raise AssertionError("retention would delete the newest backup")
    result = PruneResult(dry_run)
    doomed: list[tuple[str, tuple[str, ...]]] = []
    for info in catalog.complete:
        reasons = plan.keep.get(info.id)
        result.rows.append(
            {
                "id": info.id,
                "action": "keep" if reasons else "delete",
                "why": ", ".join(r.split(" ")[0] for r in reasons) if reasons else "outside the policy",
            }
        )
        if reasons:
            result.kept += 1
            result.reasons[info.id] = reasons
        else:
            doomed.append((info.id, (info.manifest_key, info.sha256_key, info.dump_key)))
    for leftover in catalog.leftovers:
        old = now - leftover.uploaded >= grace
        result.rows.append(
            {
                "id": leftover.id + " (incomplete)",
                "action": "delete" if old else "keep",
                "why": leftover.reason + ("" if old else f"; younger than the {grace} grace period (may still be running)"),
            }
        )
        if old:
            doomed.append((leftover.id, leftover.keys))
    for bad in catalog.unreadable:
        result.warnings.append(f"{bad['key']}: {bad['problem']} — kept; inspect or delete it by hand")
    for backup_id, keys in doomed:
        result.deleted.append(backup_id)
        if dry_run:
            continue
        for key in keys:  # manifest first
            storage.delete(key)
        log.info("backup pruned", backup=backup_id)
    return result


def cleanup_temp(settings: Settings) -> int:
    """Remove temp files of writes killed mid-way (local folder backend)."""
    grace = timedelta(hours=settings.config.backup.incomplete_grace_hours)
    return settings.storage.cleanup_temp(grace)
