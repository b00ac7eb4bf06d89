"""``safesync migrate apply``: the migration on the real target, with a way back.

1. Plan. Nothing pending → done (re-applying is a no-op).
2. Refuse unless a rehearsal of this exact plan, on a clone of this very
   database (its identity, not its name), passed within
   ``rehearsal_max_age_minutes`` (``--skip-rehearsal`` overrides; the report
   says so).
3. Preflight, a snapshot of the target's objects (to undo what the
   migration creates), baseline validation, then a ``premigrate`` backup.
4. Migrate (timeouts set), validate.
5. On failure of either, roll back automatically:
   - one SQL transaction: ROLLBACK (validation ran inside it, before COMMIT);
   - otherwise (files committed one by one, or a command): restore the
     ``premigrate`` backup (``rollback.restore_premigrate``).
   The report says what failed, how it was undone and where the backup is.
"""

from __future__ import annotations

from safesync.shared import identity, preflight
from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.errors import SafesyncError
from safesync.shared.log import get_logger, redact
from safesync.shared.report import Report

from . import migration, rollback, sqlfiles, validation
from .plan import build_plan
from .rehearse import describe_outcome, latest_passing

log = get_logger("migrate")


def run_apply(settings: Settings, report: Report, skip_rehearsal: bool) -> None:
    cfg = settings.config.migrate
    db = cfg.database
    url = settings.database_url(db)
    plan = build_plan(settings)
    report.details.update(plan=plan.details())
    report.tables["plan"] = plan.rows()
    report.warnings += plan.warnings
    if plan.empty:
        report.summary = f"nothing to apply: {plan.describe()}"
        return
    rehearsal = latest_passing(settings, plan, cfg.rehearsal_max_age_minutes, identity.resolve(url))
    if rehearsal is None and not skip_rehearsal:
        report.details["rehearsal"] = None
        report.refuse(
            f"refusing to migrate {db}: no passing rehearsal of this plan (digest {plan.digest}) on this database in the last "
            f"{cfg.rehearsal_max_age_minutes} min — run `safesync migrate rehearse` first "
            "(or `--skip-rehearsal`, which is recorded)"
        )
        return
    if rehearsal is None:
        report.details["rehearsal"] = {"skipped": True}
        report.warnings.append("rehearsal skipped (--skip-rehearsal): this plan was not rehearsed")
    else:
        report.details["rehearsal"] = rehearsal
    preflight.quick(settings, [db], tools=True)
    with connect(url, autocommit=True, application_name="safesync-migrate") as conn:
        if plan.kind == "sql":  # in the backup, so a restore also undoes the records of a half-applied run
            with conn.transaction():
                sqlfiles.ensure_records(conn)
        before = rollback.snapshot(conn)
        described = rollback.describe(conn, before)
        with report.timed("validation_before"):
            baseline = validation.baseline(settings, conn)
    from safesync.functions.backup import undo_point

    with report.timed("backup"):
        backup = undo_point(settings, db, "premigrate", trigger={"via": "migrate", "run_id": report.run_id, "plan_digest": plan.digest}, report=report)
    report.details["backup"] = backup.ref()
    outcome = _migrate(settings, plan, url, report, baseline)
    describe_outcome(report, outcome)
    if outcome.ok:
        report.summary = f"migrated {db}: {_done(plan)}; premigrate backup {backup.id}"
        return
    _roll_back(settings, report, outcome, before, backup.id, described)


def _done(plan) -> str:
    if plan.kind == "command":
        return f"`{plan.command}` succeeded"
    return f"{len(plan.pending)} file(s) applied ({', '.join(f.name for f in plan.pending)})"


def _migrate(settings: Settings, plan, url: str, report: Report, baseline: set) -> migration.Outcome:
    """Migrate and validate; any crash becomes a failed outcome so that the
    rollback still runs (the target may already be changed)."""
    check = lambda conn: validation.validate(settings, conn, baseline)  # noqa: E731
    try:
        with report.timed("migration"):
            outcome = migration.run(settings, plan, url, run_id=report.run_id, check=check)
        if outcome.migrated and outcome.validation is None:
            with connect(url, autocommit=True, application_name="safesync-migrate") as conn:
                with report.timed("validation"):
                    outcome.validation = validation.validate(settings, conn, baseline)
        return outcome
    except Exception as exc:  # noqa: BLE001 - anything: roll back, then report it
        log.exception("migration step crashed; rolling back")
        message = exc.message if isinstance(exc, SafesyncError) else f"{type(exc).__name__}: {redact(str(exc))}"
        single = plan.kind == "sql" and plan.single_transaction
        return migration.Outcome(error=message, committed=not single, rolled_back=single)


def _roll_back(
    settings: Settings, report: Report, outcome: migration.Outcome, before: rollback.Snapshot, backup_id: str, described: dict
) -> None:
    db = settings.config.migrate.database
    problem = outcome.problem()
    if not outcome.committed:
        report.details["rollback"] = {"method": "ROLLBACK (nothing was committed)", "backup": backup_id}
        report.fail(f"migration of {db} failed and was rolled back, {db} is unchanged: {problem} (premigrate backup {backup_id})")
        return
    try:
        with report.timed("rollback"):
            result = rollback.restore_premigrate(settings, db, backup_id, before, report, described)
    except Exception as exc:  # noqa: BLE001 - a database error (a lock held on a new table) too: the report must say the target is half-migrated
        log.exception("automatic rollback failed")
        why = exc.message if isinstance(exc, SafesyncError) else f"{type(exc).__name__}: {redact(str(exc)).strip()}"
        report.details["rollback"] = {"method": "restore from the premigrate backup", "backup": backup_id, "error": why}
        report.fail(
            f"migration of {db} failed ({problem}) and the automatic restore FAILED ({why}): {db} may be "
            f"half-migrated; restore it: safesync backup restore {backup_id} --to {db} --confirm {db}"
        )
        return
    report.details["rollback"] = result.details()
    report.warnings += [f"restore: {w}" for w in result.restore.get("warnings", [])]
    if not result.exact:
        report.fail(
            f"migration of {db} failed ({problem}); restored from premigrate backup {backup_id} but objects differ "
            f"from before: left over {result.leftover[:5]}, missing {result.missing[:5]}, differing {result.differing[:5]}"
        )
        return
    report.fail(f"migration of {db} failed and was rolled back by restoring premigrate backup {backup_id}: {problem}")
