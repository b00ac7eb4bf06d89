"""Restoring a backup into a database — guarded, with a safety net.

1. Refusal first, before anything is touched: a target that is one of
   ``backup.databases`` or is named ``prod`` needs ``confirm`` equal to the
   target's name (Refused → HTTP 422 / exit 1).
2. A ``safety`` backup of the target as it is now (so a wrong restore can be
   undone with another restore).
3. ``pg_restore --clean --if-exists --single-transaction --exit-on-error
   --no-owner``: objects in the dump are dropped and recreated in one
   transaction — any error and the target is exactly as before. The dump is
   streamed and checksummed on the way; the last chunk is held back until
   the SHA-256 matches, so a corrupt backup is never committed.
   ``--no-owner``: objects belong to the restoring role, because the roles
   that owned them at the source (``postgres``, a Supabase/Neon owner…)
   often do not exist or differ at the target. Privileges (GRANTs) ARE
   restored: RLS-based apps depend on them; a GRANT to a role missing at the
   target makes the restore fail and roll back, saying which role.
   Objects that exist only in the target are left alone.
4. Row counts of every restored table compared with the manifest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.errors import Refused
from safesync.shared.pgtools import libpq_target
from safesync.shared.log import get_logger
from safesync.shared.report import Report

from .catalog import resolve
from .create import count_rows, create_backup
from .manifest import BackupInfo
from .pgproc import Progress, restore_stream
from .verify import pg_restore_for

log = get_logger("backup")

RESTORE_OPTIONS = ("--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner")


@dataclass
class RestoreResult:
    backup: BackupInfo
    target: str
    safety_backup: BackupInfo | None
    tables: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {
            "backup": self.backup.id,
            "source_db": self.backup.db,
            "backup_started_at": self.backup.started_at.isoformat(),
            "target": self.target,
            "safety_backup": self.safety_backup.id if self.safety_backup else None,
            "tables": len(self.tables),
            "rows": sum(row["rows"] or 0 for row in self.tables),
            "restore_s": self.duration_s,
            "pg_restore_options": list(RESTORE_OPTIONS),
        }


def is_protected(settings: Settings, target: str) -> bool:
    return target == "prod" or target in settings.config.backup.databases


def check_target(settings: Settings, target: str, confirm: str | None) -> None:
    """Refuse (nothing touched) unless the target may be overwritten."""
    settings.check_database(target)
    if not is_protected(settings, target):
        return
    if confirm is None:
        raise Refused(
            f"refusing to restore into {target!r}: it is a protected database "
            f"(named prod or listed in backup.databases); repeat with --confirm {target} "
            f"(HTTP: \"confirm\": \"{target}\") if you really mean to overwrite it",
            {"target": target},
        )
    if confirm != target:
        raise Refused(
            f"refusing to restore into {target!r}: confirm is {confirm!r}, it must be the target's name",
            {"target": target},
        )


def restore_backup(
    settings: Settings,
    backup_id: str,
    target_db: str,
    confirm: str | None = None,
    *,
    db: str | None = None,
    report: Report | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore backup ``backup_id`` (or ``"latest"`` of ``db``) into the
    configured database ``target_db``. See the module doc for the guards."""
    check_target(settings, target_db, confirm)
    info = resolve(settings, backup_id, db)
    tool = pg_restore_for(info)
    target_url = settings.database_url(target_db)
    safety = create_backup(
        settings, target_db, "safety", trigger={"via": "restore", "restore_of": info.id}, report=report
    )
    log.info("restore started", backup=info.id, target=target_db, safety_backup=safety.id)
    conninfo, env = libpq_target(target_url, app="safesync-restore")
    started = time.perf_counter()
    pg_warnings = restore_stream(
        settings.storage,
        key=info.dump_key,
        size=info.size,
        sha256=info.sha256,
        backup_id=info.id,
        argv=[str(tool.path), *RESTORE_OPTIONS, "--dbname", conninfo],
        env=env,
        progress=progress,
    )
    result = RestoreResult(info, target_db, safety, duration_s=round(time.perf_counter() - started, 3))
    if pg_warnings:
        result.warnings.append(f"pg_restore said: {pg_warnings}")
    with connect(target_url, application_name="safesync-restore") as conn:
        counts = count_rows(conn)
    for table, expected in sorted(info.tables.items()):
        rows = counts.get(table)
        result.tables.append({"table": table, "rows": rows, "manifest": expected, "match": rows == expected})
    differ = [row["table"] for row in result.tables if not row["match"]]
    if differ:
        result.warnings.append(
            f"row counts differ from the manifest right after the restore (written to since?): {', '.join(differ[:10])}"
        )
    log.info("restore complete", backup=info.id, target=target_db)
    return result
