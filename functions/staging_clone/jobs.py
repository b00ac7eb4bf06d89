"""The staging clone as a run: the target checked, the safety backup (an
undo point) taken before the swap, the report filled, all under
``runner.execute`` (the target's lock, QStash de-duplication, the run
report under ``runs/staging_clone/``).
"""

from __future__ import annotations

from typing import Any

from safesync.shared import identity
from safesync.shared.config import Settings
from safesync.shared.delivery import Delivery
from safesync.shared.errors import Refused
from safesync.shared.progress import Meter
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from .database import clone_database, options_from_config


def check_target(settings: Settings, report: Report) -> None:
    """Refuse (nothing touched) a target that is the source or a protected
    database under another name (``shared.identity``): a clone replaces its
    schemas. The target's own ``backup.databases`` entry does not count —
    a staging that is backed up too may still be cloned into (after its
    safety backup)."""
    cfg = settings.config.staging_clone
    if cfg.target == "prod" or cfg.target == settings.config.content_sync.target:
        raise Refused(f"refusing to clone into {cfg.target!r}: it is the content-sync target / named prod, a protected database")
    found = identity.protected_aliases(settings, cfg.target, identity.protected_names(settings, cfg.source))
    report.details["target_identity"] = found.as_dict()
    if found.same:
        raise Refused(
            f"refusing to clone into {cfg.target!r}: it is the same database as {', '.join(map(repr, found.same))} "
            f"({found.identity.describe()}); point staging_clone.target at the staging database"
        )
    if found.unknown:
        raise Refused(
            f"refusing to clone into {cfg.target!r}: cannot tell whether it is "
            + ", ".join(f"{n!r} ({why})" for n, why in found.unknown.items())
        )


def _run(settings: Settings, report: Report, dry_run: bool, progress: Meter | None = None) -> None:
    cfg = settings.config.staging_clone
    check_target(settings, report)
    options = options_from_config(settings)
    source_url, target_url = settings.database_url(cfg.source), settings.database_url(cfg.target)
    backup: dict[str, Any] = {}

    def safety_backup() -> None:
        from safesync.functions.backup import undo_point

        if progress is not None:
            progress(phase=f"safety backup of {cfg.target}")
        with report.timed("safety_backup"):
            point = undo_point(
                settings, cfg.target, "safety", trigger={"via": "staging_clone", "run_id": report.run_id}, report=report,
                progress=(lambda done: progress(bytes=done)) if progress is not None else None,
            )
        backup.update(point.ref())
        report.details["safety_backup"] = backup

    report.details.update(
        {
            "source": cfg.source,
            "target": cfg.target,
            "schemas": list(options.schemas),
            "exclude_table_data": [str(t) for t in options.exclude_table_data],
            "masks": [{"table": str(m.table), "column": m.column, "strategy": m.strategy} for m in options.masks],
        }
    )
    result = clone_database(source_url, target_url, options, report=report, dry_run=dry_run, before_swap=safety_backup, progress=progress)
    report.details["plan"] = result.plan.summary()
    report.warnings += result.plan.warnings
    report.tables["tables"] = (
        [{"table": str(t), "action": "create"} for t in result.plan.created]
        + [{"table": str(t), "action": "drop"} for t in result.plan.dropped]
        + [{"table": str(t), "action": "replace"} for t in result.plan.replaced]
    )
    if options.masks:
        report.tables["masked columns (not compared)"] = report.details["masks"]
    comparison = result.comparison
    if dry_run:
        report.tables["schema differences"] = comparison.schema.rows(cfg.source, cfg.target)
        report.summary = (
            f"dry run: would replace schemas {', '.join(options.schemas)} of {cfg.target} "
            f"({len(result.plan.created)} table(s) created, {len(result.plan.dropped)} dropped, "
            f"{len(result.plan.replaced)} replaced; {len(comparison.schema.differences)} schema difference(s) now)"
        )
        return
    report.details["bytes_streamed"] = result.stats.bytes_streamed
    comparison.into_report(report, cfg.source, cfg.target)
    if comparison.identical:
        report.summary = (
            f"{cfg.target} is identical to {cfg.source} (schemas {', '.join(options.schemas)}: "
            f"{len(result.plan.source_tables)} tables, schema and data)"
        )
        report.details["identical"] = True
    else:
        report.details["identical"] = False
        report.problems(f"clone committed but {comparison.summary(cfg.source, cfg.target)}; safety backup {backup.get('id')}")


def clone(
    settings: Settings,
    *,
    dry_run: bool = False,
    trigger: dict[str, Any] | None = None,
    delivery: Delivery | None = None,
    progress: Meter | None = None,
) -> Answer:
    """The staging clone as a job, locked on the target database;
    ``progress`` hears the phases, tables copied and bytes streamed."""
    report = Report("staging_clone", "dry-run" if dry_run else "clone", trigger=trigger or {"via": "cli"})
    target = settings.config.staging_clone.target
    return execute(settings, report, lambda r: _run(settings, r, dry_run, progress), target=target, delivery=delivery)
