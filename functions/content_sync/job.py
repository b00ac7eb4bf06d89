"""compare, dry-run and sync: one code path.

All three read the source in one REPEATABLE READ, read-only snapshot and
compare every content table by range checksums. ``compare`` stops there
(its target transaction is read-only too). ``dry-run`` and ``sync`` go on in
ONE REPEATABLE READ transaction on the target: refuse on schema drift, on a
changed plan (``expect_plan``) or on deletes that would reach protected
rows; (sync only) take the safety backup; stage and upsert new and changed
rows parents first; delete target-only rows children first when
``delete_missing``; run the protection proof; compare again inside the
transaction (source must equal target); then dry-run rolls back and sync
moves sequences forward and commits. Any failure rolls back: the target is
as it was.
"""

from __future__ import annotations

from typing import Any, Callable

import psycopg

from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.errors import ConfigError, JobFailed, Refused
from safesync.shared.log import get_logger, redact
from safesync.shared.report import Report

from . import apply, proof
from .diff import Sides, TableDiff, diff_table
from .digest import plan_digest
from .plan import SyncPlan, build_plan
from .safety import take_safety_backup

log = get_logger("content_sync")

MODES = ("compare", "dry-run", "sync")
SAMPLE_KEYS = 5
LOCK_TIMEOUT = "10s"  # never queue behind the application's locks for long

Hook = Callable[[str, psycopg.Connection], None]
"""Called at named points of the write transaction ("after_write",
"before_commit") with the target connection; lets tests interrupt a sync."""


def run(
    settings: Settings,
    report: Report,
    mode: str,
    *,
    expect_plan: str | None = None,
    trigger: dict[str, Any] | None = None,
    hook: Hook | None = None,
) -> None:
    """Do ``mode`` and fill ``report``; raise on errors (the runner maps them)."""
    if mode not in MODES:
        raise ConfigError(f"unknown content sync mode {mode!r}; use one of {', '.join(MODES)}")
    section = settings.config.content_sync
    source_url, target_url = settings.database_url(section.source), settings.database_url(section.target)
    if source_url == target_url:
        raise ConfigError(f"content_sync: source {section.source!r} and target {section.target!r} are the same database")
    report.details.update(source=section.source, target=section.target, mode=mode)
    src = connect(source_url, application_name=f"safesync-source-{report.run_id}")
    try:
        tgt = connect(target_url, application_name="safesync-content-sync")
    except BaseException:
        src.close()
        raise
    sides = Sides(src, tgt)
    try:
        for conn in (src, tgt):
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        src.read_only = True
        tgt.read_only = mode == "compare"
        for conn in (src, tgt):  # session level; takes no snapshot yet
            conn.execute("set idle_in_transaction_session_timeout = 0")  # a long backup may sit in between
        _run(settings, report, mode, src, tgt, sides, expect_plan, trigger, hook or (lambda step, conn: None))
    except psycopg.Error as exc:
        _close(tgt)
        message = f"{mode} rolled back, target unchanged: {redact(str(exc)).strip()}"
        if isinstance(exc, (psycopg.errors.IntegrityError, psycopg.errors.DataError)):
            raise Refused(message) from None  # the target's constraints reject these rows: retrying will not help
        raise JobFailed(message) from None
    finally:
        sides.close()
        _close(tgt)
        _close(src)


def _close(conn: psycopg.Connection) -> None:
    """Close (rolling back anything open); errors of a dead connection are moot."""
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


def _run(settings, report, mode, src, tgt, sides, expect_plan, trigger, hook: Hook) -> None:
    with report.timed("plan"):
        plan = build_plan(settings.config.content_sync, src, tgt)
    writing = mode != "compare"
    if writing:
        tgt.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
        before = proof.take(tgt)
    with report.timed("compare"):
        diffs = [diff_table(sides, spec) for spec in plan.tables]
    digest = plan_digest(plan, diffs)
    _describe(report, plan, diffs, digest, src, tgt)
    drifted = [d.spec for d in diffs if d.spec.drift.any]
    drift_text = "; ".join(f"{s.name}: {s.drift.describe()}" for s in drifted)
    if not writing:
        _summarise_compare(report, plan, diffs, digest, drift_text)
        return
    if drifted:
        report.refuse(f"schema drift, nothing synced — {drift_text}")
        return
    if expect_plan and expect_plan != digest:
        report.refuse(f"the plan changed since it was reviewed (expected {expect_plan}, now {digest}); run dry-run again")
        return
    deletes = {d.spec.table: sorted(d.extra) for d in diffs if plan.delete_missing and d.extra}
    blocked = [ref for d in diffs if d.spec.table in deletes for ref in apply.protected_references(tgt, plan, d.spec, deletes[d.spec.table])]
    if blocked:
        report.tables["blocked deletes"] = blocked
        report.refuse(
            "delete_missing refused, nothing synced: "
            + "; ".join(f"{b['table']} has {b['rows']} row(s) referencing {b['references']} rows to delete ({b['on_delete']})" for b in blocked)
        )
        return
    pending = sum(len(d.new) + len(d.changed) for d in diffs) + sum(len(k) for k in deletes.values())
    if mode == "sync" and pending:
        with report.timed("safety_backup"):
            report.details["safety_backup"] = take_safety_backup(settings, plan.target, report, trigger)
    written = _write(report, plan, diffs, deletes, src, tgt)
    hook("after_write", tgt)
    after = proof.take(tgt)
    result = proof.verify(before, after, proof.allowed_relids(tgt, plan.content))
    report.tables["protection proof"] = result.rows
    report.details["protection_proof"] = {"ok": result.ok, "tables_checked": result.checked, "violations": result.violations}
    if not result.ok:
        tgt.rollback()
        report.refuse(f"rolled back, nothing changed: the sync wrote protected table(s) {result.describe()} (a trigger or cascade?)")
        return
    with report.timed("verify"):
        post = [diff_table(sides, spec) for spec in plan.tables]
    left = [
        f"{d.spec.name} ({len(d.new)} new, {len(d.changed)} changed" + (f", {len(d.extra)} extra)" if plan.delete_missing else ")")
        for d in post
        if d.new or d.changed or (plan.delete_missing and d.extra)
    ]
    report.details["verified"] = not left
    if left:
        tgt.rollback()
        report.fail(f"rolled back, nothing changed: after writing, source and target still differ in {', '.join(left)}")
        return
    moves = [m for spec in plan.tables for m in apply.sequence_moves(tgt, spec)]
    report.details["sequences"] = [m.as_row() for m in moves if m.moves]
    hook("before_commit", tgt)
    rows = sum(written.values())
    proof_text = f"protection proof ok ({result.checked} other tables untouched)"
    if mode == "dry-run":
        tgt.rollback()
        report.summary = f"dry-run, rolled back: would write {rows} row(s) in {len([n for n in written.values() if n])} table(s); {proof_text}; plan {digest}"
        return
    apply.move_sequences(tgt, moves)  # not transactional: only now that nothing can fail before COMMIT
    tgt.commit()
    report.summary = (
        f"synced {rows} row(s) into {len([n for n in written.values() if n])} table(s); {proof_text}; plan {digest}"
        if rows
        else f"already in sync: nothing written; {proof_text}"
    )


def _write(report: Report, plan: SyncPlan, diffs: list[TableDiff], deletes: dict, src, tgt) -> dict[str, int]:
    """Upserts parents first, then deletes children first; fills the
    per-table ``written``/``deleted`` columns of the report."""
    written: dict[str, int] = {}
    rows = {r["table"]: r for r in report.tables["tables"]}
    moved = 0
    with report.timed("write"):
        tgt.execute("set constraints all deferred")  # only affects deferrable FKs (cycles)
        for i, diff in enumerate(diffs):
            keys = sorted(diff.new) + sorted(diff.changed)
            count = 0
            if keys:
                temp = apply.temp_name(i)
                moved += apply.stage_rows(src, tgt, diff.spec, keys, temp)
                count = apply.upsert(tgt, diff.spec, temp)
            written[diff.spec.name] = count
            rows[diff.spec.name]["written"] = count
        for diff in reversed(diffs):
            keys = deletes.get(diff.spec.table)
            if keys:
                n = apply.delete_rows(tgt, diff.spec, keys)
                written[diff.spec.name] += n
                rows[diff.spec.name]["deleted"] = n
    report.details["bytes_copied"] = moved
    return written


def _describe(report: Report, plan: SyncPlan, diffs: list[TableDiff], digest: str, src, tgt) -> None:
    report.details["plan_digest"] = digest
    report.details["fk_order"] = [s.name for s in plan.tables]
    report.details["protected"] = {
        "listed": [t.short for t in plan.protected_listed],
        "all_other_tables": len(plan.protected_all),
    }
    report.tables["tables"] = [
        {
            "table": d.spec.name,
            "new": len(d.new),
            "changed": len(d.changed),
            "unchanged": d.unchanged,
            "extra": len(d.extra),
            **({"drift": d.spec.drift.describe()} if d.spec.drift.any else {}),
        }
        for d in diffs
    ]
    report.details["compare"] = {d.spec.name: {"queries_per_side": d.queries, "hashes_fetched": d.rows_fetched} for d in diffs}
    samples = {}
    for d in diffs:
        if not d.differs:
            continue
        changed = sorted(d.changed)[:SAMPLE_KEYS]
        ours, theirs = apply.column_texts(src, d.spec, changed), apply.column_texts(tgt, d.spec, changed)
        samples[d.spec.name] = {
            "new": [list(k) for k in sorted(d.new)[:SAMPLE_KEYS]],
            "changed": [
                {"key": list(k), "columns": [c for c, a, b in zip(d.spec.columns, ours.get(k, ()), theirs.get(k, ())) if a != b]}
                for k in changed
            ],
            "extra": [list(k) for k in sorted(d.extra)[:SAMPLE_KEYS]],
        }
    report.details["samples"] = samples


def _summarise_compare(report: Report, plan: SyncPlan, diffs: list[TableDiff], digest: str, drift_text: str) -> None:
    new = sum(len(d.new) for d in diffs)
    changed = sum(len(d.changed) for d in diffs)
    extra = sum(len(d.extra) for d in diffs)
    differing = sum(1 for d in diffs if d.differs)
    if drift_text:
        report.problems(f"schema drift (a sync would be refused) — {drift_text}")
    elif differing:
        report.summary = (
            f"{plan.source} → {plan.target}: {new} new, {changed} changed, {extra} only in target, "
            f"in {differing} of {len(diffs)} table(s); plan {digest}"
        )
    else:
        report.summary = f"{plan.source} → {plan.target}: all {len(diffs)} content tables identical"
