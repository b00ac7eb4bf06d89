"""``staging_clone``: make staging an exact copy of dev's configured schemas,
atomically, then prove it.

Order of a run (``safesync staging clone`` / POST ``/staging_clone``):

1. open a snapshot on the source (the dump and the final comparison both
   read it, so edits on dev during the clone cannot make the proof lie);
2. plan and refuse what is unsafe (``plan.plan_clone``);
3. safety backup of the whole target database to storage (kind ``safety``);
4. the swap, one transaction (``engine.stream_clone``): drop the schemas,
   recreate them from the dump, apply masks, verify, COMMIT;
5. compare source (same snapshot) and target: schema diff + data diff. The
   report says "identical" only when both are empty.

Library API (migrations rehearse on a scratch clone):
``clone_database(source_url, target_url, options, ...) -> CloneResult`` and
``options_from_config(settings)``.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import psycopg
from pydantic import BaseModel, ConfigDict, StrictBool

from safesync.shared import identity
from safesync.shared.config import Settings
from safesync.shared.errors import Refused
from safesync.shared.db import TableRef, connect
from safesync.shared.delivery import Delivery
from safesync.shared.http import Call, validate_body
from safesync.shared.log import get_logger
from safesync.shared.progress import Meter, terminal
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from .engine import CloneStats, stream_clone
from .plan import CloneOptions, ClonePlan, Mask, plan_clone

__all__ = ["CloneOptions", "ClonePlan", "CloneResult", "Mask", "clone", "clone_database", "handle_http", "options_from_config", "register_cli"]

log = get_logger("staging_clone")
PROGRESS_EVERY = 256 << 20


@dataclass
class CloneResult:
    plan: ClonePlan
    stats: CloneStats | None  # None: dry run
    comparison: Any = None  # validate.Comparison, when compared

    @property
    def identical(self) -> bool:
        return self.comparison is not None and self.comparison.identical


def options_from_config(settings: Settings) -> CloneOptions:
    cfg = settings.config.staging_clone
    return CloneOptions(
        schemas=tuple(cfg.schemas),
        exclude_table_data=tuple(TableRef.parse(t) for t in cfg.exclude_table_data),
        masks=tuple(Mask(TableRef.parse(m.table), m.column, m.strategy, m.value) for m in cfg.mask),
    )


class _Streamed:
    """What the clone's dump stream has carried: bytes, and tables whose data
    is complete (each COPY block of pg_dump's plain format ends in a line
    ``\\.``). Logs every 256 MiB; tells a terminal meter as it goes."""

    END = b"\n\\.\n"

    def __init__(self, tables: int, meter: Meter | None) -> None:
        self.tables, self.meter = tables, meter
        self.done, self.tail, self.logged = 0, b"", 0

    def __call__(self, chunk: bytes, total: int) -> None:
        if total - self.logged >= PROGRESS_EVERY:
            self.logged = total
            log.info("clone progress", streamed_mb=total >> 20)
        if self.meter is None:
            return
        data = self.tail + chunk  # a marker may straddle two chunks; the 3-byte tail never holds a whole one
        self.done += data.count(self.END)
        self.tail = data[-3:]
        self.meter(tables=(min(self.done, self.tables), self.tables), bytes=total)


def clone_database(
    source_url: str,
    target_url: str,
    options: CloneOptions,
    *,
    report: Report | None = None,
    dry_run: bool = False,
    before_swap: Callable[[], Any] | None = None,
    compare_after: bool = True,
    progress: Meter | None = None,
) -> CloneResult:
    """Replace ``options.schemas`` of the target with the source's, in one
    transaction; then compare both (unless ``compare_after`` is False).

    ``before_swap`` runs after planning, before anything is written (the
    safety backup). Raises Refused (nothing done), JobFailed (target rolled
    back), DatabaseError.
    """
    from safesync.functions.validate import compare

    timed = report.timed if report is not None else (lambda step: nullcontext())
    meter = progress or (lambda **_: None)
    with connect(source_url, application_name="safesync-clone-source") as src, connect(
        target_url, autocommit=True, application_name="safesync-clone-target"
    ) as dst:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        src.read_only = True
        snapshot = src.execute("select pg_export_snapshot()").fetchone()[0]
        meter(phase="planning")
        with timed("plan"):
            plan = plan_clone(src, dst, options)
        if dry_run:
            with timed("compare"):
                comparison = compare(src, dst, options.schemas) if compare_after else None
            return CloneResult(plan, None, comparison)
        if before_swap is not None:
            before_swap()
        with_data = len(plan.source_tables) - len(set(options.exclude_table_data) & set(plan.source_tables))
        meter(phase="copying", tables=(0, with_data), bytes=0)
        with timed("swap"):
            stats = stream_clone(
                source_url,
                target_url,
                options,
                plan,
                snapshot=snapshot,
                server_version=src.info.server_version,
                target_conn=dst,
                on_chunk=_Streamed(with_data, progress),
            )
        result = CloneResult(plan, stats)
        if compare_after:
            meter(phase="comparing source and target")
            with timed("compare"):
                masked: dict[TableRef, list[str]] = {}
                for m in options.masks:
                    masked.setdefault(m.table, []).append(m.column)
                result.comparison = compare(src, dst, options.schemas, exclude_columns=masked, count_only=options.exclude_table_data)
        return result


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


class CloneBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: StrictBool = False  # "no" or 0 must be a 400, never a real clone


def handle_http(call: Call) -> Answer:
    body = validate_body(CloneBody, call.body)
    return clone(call.settings, dry_run=body.dry_run, trigger=call.trigger(), delivery=call.delivery)


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    group = sub.add_parser("staging", parents=[parent], help="staging: exact, atomic clone of dev")
    actions = group.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    p = actions.add_parser("clone", parents=[parent], help="replace staging's schemas with dev's (safety backup first)")
    p.add_argument("--dry-run", action="store_true", help="plan and show differences; change nothing")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace, settings: Settings) -> Answer:
    """On a terminal: phases, tables copied, bytes streamed."""
    with terminal("staging clone", quiet=args.json) as meter:
        return clone(settings, dry_run=args.dry_run, progress=meter)
