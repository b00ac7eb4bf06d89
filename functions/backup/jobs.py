"""The backup job's actions as runs: each builds a Report and goes through
``runner.execute`` (lock, QStash de-duplication, storage check, run report),
so HTTP and the CLI behave identically.

Locks: create/restore/prune hold the ``backup`` lock of the database they
write (create: the backed-up database; restore: the target; prune: each
database whose backups it deletes). list and verify only read (verify
rewrites manifests atomically) and take no lock.
"""

from __future__ import annotations

from typing import Any

from safesync.shared.config import Settings
from safesync.shared.delivery import Delivery
from safesync.shared.errors import AlreadyRunning, BadRequest, ConfigError, DatabaseError, SafesyncError
from safesync.shared.locks import JobLock
from safesync.shared.report import Answer, Report
from safesync.shared.runner import execute

from .archive import require_identity
from .catalog import databases, get_backup, scan
from .create import create_backup
from .layout import BackupName
from .manifest import human_bytes
from .pgproc import Progress
from .prune import PruneResult, cleanup_temp, prune_database
from .restore import restore_backup
from .verify import VerifyResult, verify_backup

JOB = "backup"


def run_create(
    settings: Settings,
    db: str,
    kind: str,
    *,
    trigger: dict[str, Any],
    deployment: str | None = None,
    delivery: Delivery | None = None,
    progress: Progress | None = None,
) -> Answer:
    """One backup of ``db``; ``deployment`` tags a predeploy backup with the
    deployment it precedes (any other kind with one is a bad request)."""
    settings.check_database(db)
    if deployment:
        if kind != "predeploy":
            raise BadRequest("deployment: only a predeploy backup is tagged with a deployment (--kind predeploy)")
        trigger = {**trigger, "deployment": deployment}
    report = Report(JOB, "create", trigger=trigger)

    def job(report: Report) -> None:
        info = create_backup(settings, db, kind, trigger=trigger, report=report, progress=progress)
        report.summary = (
            f"backup {info.id} stored: {human_bytes(info.size)}, {len(info.tables)} tables, "
            f"{info.rows_total} rows, sha256 {info.sha256[:12]}…"
        )
        report.details["backup"] = info.to_dict()
        report.details["storage"] = settings.storage.describe()
        report.tables["backup"] = [info.row()]
        if settings.config.backup.prune_after_create:
            try:
                pruned = prune_database(settings, db)
            except SafesyncError as exc:
                report.problems(f"backup {info.id} stored, but pruning old backups failed: {exc.message}")
                return
            report.details["prune"] = {"deleted": pruned.deleted, "kept": pruned.kept, "temp_removed": cleanup_temp(settings)}
            report.warnings += pruned.warnings
            if pruned.deleted:
                report.summary += f"; pruned {len(pruned.deleted)} old backup(s)"

    return execute(settings, report, job, target=db, delivery=delivery)


def run_list(settings: Settings, db: str | None = None) -> Answer:
    names = databases(settings, db)  # an unknown name is a usage error, not a run
    report = Report(JOB, "list", trigger={"via": "list"})

    def job(report: Report) -> None:
        backups = []
        for name in names:
            catalog = scan(settings.storage, name)
            backups += catalog.complete
            if catalog.leftovers:
                report.warnings.append(
                    f"{name}: {len(catalog.leftovers)} incomplete backup(s) not listed "
                    "(interrupted; prune removes them after the grace period)"
                )
            for bad in catalog.unreadable:
                report.warnings.append(f"{bad['key']}: unreadable manifest, not listed: {bad['problem']}")
        backups.sort(key=lambda info: (info.started_at, info.id), reverse=True)
        report.tables["backups"] = [info.row() for info in backups]
        report.details["backups"] = [{k: v for k, v in info.to_dict().items() if k != "tables"} for info in backups]
        report.details["storage"] = settings.storage.describe()
        if backups:
            report.summary = f"{len(backups)} complete backup(s); newest {backups[0].id} ({backups[0].row()['age']} old)"
        else:
            report.summary = f"no complete backups in {settings.storage.describe()}"

    return execute(settings, report, job, record=False)


def run_verify(
    settings: Settings,
    backup_id: str | None = None,
    *,
    all_backups: bool = False,
    restore_drill: bool = False,
    trigger: dict[str, Any] | None = None,
) -> Answer:
    """One backup by id; every backup (``all_backups``); or, with neither,
    the newest backup of each of ``backup.databases``."""
    if backup_id is not None and all_backups:
        raise BadRequest("give either one backup id or all (--all), not both")
    if backup_id is not None:  # "" is a bad id, not "the newest of each"
        BackupName.parse(backup_id)
    report = Report(JOB, "verify", trigger=trigger or {})

    def job(report: Report) -> None:
        missing: list[str] = []
        damaged: list[VerifyResult] = []
        if backup_id is not None:
            targets = [get_backup(settings, backup_id)]
        else:
            targets = []
            for db in databases(settings) if all_backups else settings.config.backup.databases:
                catalog = scan(settings.storage, db)
                damaged += [VerifyResult(d.id, [d.problem]) for d in catalog.damaged]
                if all_backups:
                    targets += catalog.complete
                elif catalog.newest_full is not None:
                    targets.append(catalog.newest_full)
                else:
                    missing.append(db)
            targets.sort(key=lambda info: (info.started_at, info.id), reverse=True)
        for info in targets:  # every identity problem before any result is recorded
            require_identity(settings, info)
        results = [verify_backup(settings, info, restore_drill_too=restore_drill) for info in targets] + damaged
        report.tables["verified"] = [r.row() for r in results]
        report.details["results"] = [
            {"id": r.id, "ok": r.ok, "problems": r.all_problems, "checks": r.checks, "drill": r.drill} for r in results
        ]
        for r in results:
            report.warnings += r.warnings
        failed = [r for r in results if not r.ok]
        what = "verified" + (" and restore-drilled" if restore_drill else "")
        troubles = [f"{r.id}: {r.all_problems[0]}" for r in failed]
        troubles += [f"{db}: no complete backup" for db in missing]
        if not results and not missing:
            troubles.append("no complete backups to verify")
        if failed:
            report.problems(f"{len(failed)} of {len(results)} backup(s) FAILED verification; " + "; ".join(troubles))
        elif troubles:  # nothing failed: say what there was nothing of
            verified = f"; {len(results)} other backup(s) {what}: all good" if results else ""
            report.problems("; ".join(troubles) + verified)
        else:
            report.summary = f"{len(results)} backup(s) {what}: all good"

    return execute(settings, report, job)


def run_restore(
    settings: Settings,
    ref: str,
    *,
    db: str | None,
    to: str,
    confirm: str | None,
    trigger: dict[str, Any],
    delivery: Delivery | None = None,
    progress: Progress | None = None,
    no_owner: bool = False,
) -> Answer:
    settings.check_database(to)
    if db is not None:
        settings.check_database(db)
    if ref == "latest" and db is None:
        raise BadRequest("'latest' needs the database: --db NAME (HTTP: \"db\")")
    if ref != "latest":
        BackupName.parse(ref)
    report = Report(JOB, "restore", trigger=trigger)

    def job(report: Report) -> None:
        result = restore_backup(settings, ref, to, confirm, db=db, report=report, progress=progress, no_owner=no_owner)
        details = result.details()
        report.details["restore"] = details
        report.tables["restored"] = result.tables
        report.warnings += result.warnings
        report.summary = (
            f"restored {result.backup.id} into {to}: {details['tables']} tables, {details['rows']} rows "
            f"(safety backup of {to} before: {details['safety_backup']})"
        )

    return execute(settings, report, job, target=to, delivery=delivery)


def run_prune(
    settings: Settings,
    db: str | None = None,
    *,
    dry_run: bool = False,
    trigger: dict[str, Any] | None = None,
    delivery: Delivery | None = None,
) -> Answer:
    """Prune one database's backups (under its lock) or every configured
    database's (taking each one's lock in turn; a database whose backup is
    running right now is skipped, and one we cannot reach is pruned anyway:
    pruning needs only storage)."""
    names = databases(settings, db)
    report = Report(JOB, "prune", trigger=trigger or {})

    def job(report: Report) -> None:
        total = PruneResult(dry_run)
        for name in names:
            if not settings.storage.list(f"{name}/"):
                continue  # nothing stored for it: no lock, no database connection needed
            lock = None
            if db is None and not dry_run:
                try:
                    lock = JobLock(settings.database_url(name), JOB, name).acquire()
                except AlreadyRunning:
                    report.warnings.append(f"{name}: a backup job is running on it; not pruned this time")
                    continue
                except (ConfigError, DatabaseError) as exc:
                    report.warnings.append(f"{name}: pruned without its lock ({exc.message})")
            try:
                total.merge(prune_database(settings, name, dry_run=dry_run))
            finally:
                if lock is not None:
                    lock.release()
        if not dry_run:
            total.temp_removed = cleanup_temp(settings)
        report.tables["prune"] = total.rows
        report.details.update(deleted=total.deleted, kept=total.reasons, temp_removed=total.temp_removed, dry_run=dry_run)
        report.warnings += total.warnings
        report.summary = total.summary()

    target = db if (db is not None and not dry_run) else None
    return execute(settings, report, job, target=target, delivery=delivery if target else None)
