"""Restoring a backup into a database — guarded, with a safety net.

1. Refusal first, before anything is touched: a target that is one of
   ``backup.databases``, is named ``prod``, or is the same database as one
   of them, as the content-sync target or as the backup's source (by
   identity, whatever it is called) needs ``confirm`` equal to the target's
   name; and the dump's table of contents is planned against the target
   (``restore_plan``): an object the restoring role cannot create, or an
   owner it may not assign, refuses the restore naming the object and the
   privilege (Refused → HTTP 422 / exit 1). ``no_owner`` (``--no-owner``)
   explicitly accepts that the restoring role owns everything instead.
   Reading that table of contents decrypts an encrypted backup's header
   and first chunk: a missing or wrong age identity is a ConfigError
   (HTTP 400 / exit 2) here, before the safety backup.
2. A ``safety`` backup of the target as it is now (so a wrong restore can be
   undone with another restore).
3. ``pg_restore --clean --if-exists --single-transaction --exit-on-error
   --use-list``: objects in the dump are dropped and recreated in one
   transaction, with their owners and grants — any error and the target is
   exactly as before. The dump is streamed and checksummed on the way; the
   last chunk is held back until the SHA-256 matches, so a corrupt backup is
   never committed. Entries the role may not replace but the target already
   has (a platform's schemas, event triggers, extensions) are left out of
   the list and reported as kept. Objects that exist only in the target are
   left alone. A wait of more than ``backup.restore_lock_wait_seconds`` on
   one lock (the application's open transaction) cancels the restore, which
   rolls back, naming the lock and its holder (``lockwatch``).
4. Row counts of every restored table compared with the manifest, and each
   table checked readable by its owner in the backup.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from safesync.shared import identity
from safesync.shared.config import Settings
from safesync.shared.db import TableRef, connect
from safesync.shared.errors import JobFailed, Refused, SafesyncError
from safesync.shared.pgtools import libpq_target
from safesync.shared.log import get_logger
from safesync.shared.report import Report, first_few

from .archive import Archive, check_stored
from .catalog import resolve
from .create import count_rows, create_backup
from .lockwatch import LockWatch, describe_blockers
from .manifest import BackupInfo
from .pgproc import Progress, restore_stream
from .restore_plan import RestorePlan, plan_restore, unreadable_by_owner
from .toc import use_list
from .verify import beyond_scope, pg_restore_for, read_toc

log = get_logger("backup")

RESTORE_OPTIONS = ("--clean", "--if-exists", "--single-transaction", "--exit-on-error")


@dataclass
class RestoreResult:
    backup: BackupInfo
    target: str
    safety_backup: BackupInfo | None
    no_owner: bool = False
    kept: list[str] = field(default_factory=list)  # entries left as on the target (the role may not replace them)
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
            "pg_restore_options": list(RESTORE_OPTIONS) + (["--no-owner"] if self.no_owner else []),
            "kept_as_on_target": self.kept,
        }


def protection(settings: Settings, target: str, source: str | None = None) -> str | None:
    """Why ``target`` may not be overwritten without ``confirm``, or None.
    By name (``prod``, ``backup.databases``) and by identity: a target that
    is the same database as a protected one, or as the backup's own source,
    is protected whatever it is called (``shared.identity``)."""
    if target == "prod" or target in settings.config.backup.databases:
        return "it is a protected database (named prod or listed in backup.databases)"
    found = identity.protected_aliases(settings, target, identity.protected_names(settings, source))
    if found.same:
        return f"it is the same database as {', '.join(map(repr, found.same))} ({found.identity.describe()})"
    if found.unknown:
        return "safesync cannot tell whether it is " + ", ".join(f"{n!r} ({why})" for n, why in found.unknown.items())
    return None


def check_target(settings: Settings, target: str, confirm: str | None, source: str | None = None) -> None:
    """Refuse (nothing touched) unless the target may be overwritten."""
    settings.check_database(target)
    reason = protection(settings, target, source)
    if reason is None:
        return
    if confirm is None:
        raise Refused(
            f"refusing to restore into {target!r}: {reason}; repeat with --confirm {target} "
            f"(HTTP: \"confirm\": \"{target}\") if you really mean to overwrite it",
            {"target": target},
        )
    if confirm != target:
        raise Refused(
            f"refusing to restore into {target!r}: confirm is {confirm!r}, it must be the target's name",
            {"target": target},
        )


def _refuse(info: BackupInfo, target: str, plan: RestorePlan) -> None:
    """Refuse before anything is touched when the role cannot restore the
    backup faithfully."""
    problems = []
    if plan.blocked:
        problems.append(f"{len(plan.blocked)} object(s) {plan.role} cannot create: " + "; ".join(plan.blocked_rows()[:8]))
    if plan.owners:
        problems.append(
            f"objects would lose their owner: {plan.role} may not assign " + "; ".join(plan.owner_rows())
            + f" — grant {plan.role} membership in those roles, or pass --no-owner to restore them owned by {plan.role}"
        )
    if problems:
        raise Refused(f"refusing to restore {info.id} into {target!r}: " + " | ".join(problems), {"problems": problems})


def _lock_wait_failure(info: BackupInfo, target: str, limit: float, cancelled: dict[str, Any], safety: BackupInfo) -> JobFailed:
    """The restore cancelled by the lock watch: what it waited for, who held
    it, and that nothing changed (its one transaction rolled back)."""
    return JobFailed(
        f"restore of {info.id} into {target!r} cancelled: it waited {cancelled['waited_s']:g}s "
        f"(backup.restore_lock_wait_seconds = {limit:g}) for a {cancelled['mode']} on {cancelled['lock_on']}, held by "
        f"{describe_blockers(cancelled['blockers'])}; nothing was restored (its transaction rolled back). "
        "End or finish that session and restore again",
        {"target": target, "lock_wait": cancelled, "safety_backup": safety.id},
    )


def _refuse_dependents(conn, info: BackupInfo, target_db: str) -> None:
    """A partial restore drops and recreates the tables it holds; PostgreSQL
    refuses that while a table outside them has a foreign key to one (the
    users' progress rows to the lessons they are on). Said before anything
    runs — a safety backup of the whole target included — with the way that
    works: the sync's undo."""
    names = [TableRef.parse(key).ident.as_string(conn) for key in info.scope_tables]
    rows = conn.execute(
        """with scope as (select to_regclass(t) as relid from unnest(%s::text[]) t)
           select k.conrelid::regclass::text, k.confrelid::regclass::text, k.conname
             from pg_constraint k
            where k.contype = 'f' and k.confrelid in (select relid from scope)
              and k.conrelid not in (select relid from scope where relid is not null)
            order by 1, 2, 3""",
        [names],
    ).fetchall()
    if rows:
        shown = first_few([f"{child} → {parent} ({name})" for child, parent, name in rows], "; ")
        raise Refused(
            f"restore of {info.id} into {target_db!r} refused, nothing changed: it is a partial backup, whose tables a restore drops and "
            f"recreates, and tables outside it reference them: {shown}. Undo a content sync with `safesync content undo RUN_ID` "
            "(it puts back only the rows that sync changed), or restore a full backup",
            {"backup": info.id, "references": [{"table": c, "references": p, "constraint": n} for c, p, n in rows]},
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
    no_owner: bool = False,
) -> RestoreResult:
    """Restore backup ``backup_id`` (or ``"latest"`` of ``db``) into the
    configured database ``target_db``. See the module doc for the guards."""
    info = resolve(settings, backup_id, db)
    check_target(settings, target_db, confirm, source=info.db)
    tool = pg_restore_for(info)
    target_url = settings.database_url(target_db)
    entries = read_toc(settings, info)
    beyond = beyond_scope(info, entries)
    if beyond:
        raise Refused(
            f"restore of {info.id} refused, nothing changed: it is a partial backup of {len(info.scope_tables)} table(s), but its dump "
            f"holds {len(beyond)} more ({first_few(beyond)}), which a restore would replace",
            {"backup": info.id, "beyond_scope": beyond},
        )
    with connect(target_url, application_name="safesync-restore") as conn:
        if info.partial:
            _refuse_dependents(conn, info, target_db)
        plan = plan_restore(conn, entries, no_owner=no_owner)
    _refuse(info, target_db, plan)
    check_stored(settings, info)  # the whole dump as written, before the safety backup and the restore
    safety = create_backup(
        settings, target_db, "safety", trigger={"via": "restore", "restore_of": info.id}, report=report
    )
    log.info("restore started", backup=info.id, target=target_db, safety_backup=safety.id)
    app = f"safesync-restore-{uuid.uuid4().hex[:12]}"  # the backend the lock watch looks for
    conninfo, env = libpq_target(target_url, app=app)
    started = time.perf_counter()
    options = [*RESTORE_OPTIONS, *(["--no-owner"] if no_owner else [])]
    limit = settings.config.backup.restore_lock_wait_seconds
    with tempfile.NamedTemporaryFile("w", prefix="safesync-restore-", suffix=".list") as listing, LockWatch(target_url, app, limit) as watch:
        listing.write(use_list(entries, plan.left_out))
        listing.flush()
        try:
            pg_warnings = restore_stream(
                Archive(settings, info, progress=progress),
                argv=[str(tool.path), *options, "--use-list", listing.name, "--dbname", conninfo],
                env=env,
            )
        except SafesyncError:
            if watch.cancelled:
                raise _lock_wait_failure(info, target_db, limit, watch.cancelled, safety) from None
            raise
    result = RestoreResult(info, target_db, safety, no_owner=no_owner, kept=plan.kept_rows(), duration_s=round(time.perf_counter() - started, 3))
    if info.partial:  # an undo point for some tables, not a copy of the database: say so beside "restored"
        result.warnings.append(
            f"{info.id} is a partial backup (only the {len(info.tables)} table(s) it holds, e.g. a content sync's undo point): "
            f"the rest of {target_db} is as it was"
        )
    if watch.problem:
        result.warnings.append(f"the restore's lock wait was not bounded (the watch could not run: {watch.problem})")
    if pg_warnings:
        result.warnings.append(f"pg_restore said: {pg_warnings}")
    if plan.kept:
        result.warnings.append(f"{len(plan.kept)} object(s) kept as they are on {target_db} ({plan.role} may not replace them): see kept_as_on_target")
    with connect(target_url, application_name="safesync-restore") as conn:
        counts = count_rows(conn)
        unreadable = unreadable_by_owner(conn, entries, plan)
    if unreadable:
        result.warnings.append(f"tables their owner in the backup can no longer read: {', '.join(unreadable[:10])}")
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
