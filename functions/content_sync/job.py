"""compare, dry-run and sync: one code path.

All three first audit the target statically (``audit``: side channels the
proof cannot see — refused unless acknowledged, before anything runs there;
compare reports them) and check the target role's privileges. They read
the source in one REPEATABLE READ, read-only snapshot, compare every
content table by range checksums and classify each differing row three-way
against the ledger (``conflicts``). ``compare`` stops there (its target
transaction is read-only too). ``dry-run`` and ``sync`` go on in ONE
REPEATABLE READ transaction on the target: take the proof's first snapshot
(refusing when ``track_counts`` is off); refuse on schema drift, key
collisions, unresolved conflicts (``on_conflict = "fail"``), rows without
history on a first run (unless ``adopt``), a changed plan (``expect_plan``)
or deletes that would reach protected rows; stage and upsert the rows to
write, parents first, and delete rows children first (``delete_missing``),
each table's before-images going to the undo log first; fire deferred constraint triggers;
check every written row's hash on the target against the source's; record
the ledger (``ledger_watch``: only the sync's own statements may change it); check that no content row other than those written was touched
(transaction counters; a table where a trigger or cascade touched more is
compared again in full); ``SET CONSTRAINTS ALL IMMEDIATE`` and the
protection proof, the last statement that reads or writes; then dry-run
rolls back, and sync waits for its presync backup (started with the run,
``safety``), stores its undo log (recorded in the ledger before the
proof), moves content sequences forward and commits. Any failure rolls
back: the target — and its ledger — is as it was.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import psycopg

from safesync.shared.config import Settings
from safesync.shared import db
from safesync.shared.db import TableRef, connect
from safesync.shared.identity import identify
from safesync.shared.errors import ConfigError, SafesyncError, StorageError
from safesync.shared.log import get_logger, redact
from safesync.shared.pgerrors import database_failure
from safesync.shared.progress import Meter
from safesync.shared.report import Report, first_few
from safesync.shared.rowdiff import Key, Sides, diff_table, hashes_by_key, tune

from . import apply, audit, ledger, ledger_watch, proof, seed, triggers, undolog
from .conflicts import TableDecisions, classify
from .digest import plan_digest
from .plan import SyncPlan, TableSpec, build_plan
from .safety import PresyncBackup

log = get_logger("content_sync")

MODES = ("compare", "dry-run", "sync")
SAMPLE_KEYS = 5
REPORT_ROWS = 50  # conflicts, collisions, unconfirmed rows listed per table
VALUE_CHARS = 120  # a column value shown in a report is cut to this length
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
    adopt: bool = False,
    trigger: dict[str, Any] | None = None,
    hook: Hook | None = None,
    progress: Meter | None = None,
) -> None:
    """Do ``mode`` and fill ``report``; raise on errors (the runner maps them).
    ``progress`` hears about tables compared and written, rows and bytes."""
    section = settings.config.content_sync
    source_url, target_url = settings.database_url(section.source), settings.database_url(section.target)
    report.details.update(source=section.source, target=section.target, mode=mode, adopt=adopt)
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
        with report.timed("identity"):
            _check_distinct(report, section, src, tgt, source_url, target_url)
        meter = progress or (lambda **_: None)
        backup = PresyncBackup(settings, section.target, report, trigger, [TableRef.parse(t) for t in section.tables])
        if mode == "sync":
            backup.start()  # beside the plan, compare and writes; waited for before COMMIT
        try:
            _run(settings, report, mode, src, tgt, sides, expect_plan, adopt, backup, hook or (lambda step, conn: None), meter)
        finally:
            backup.cancel()  # a run that did not commit does not need it (a finished one stays)
    except psycopg.Error as exc:
        close_quietly(tgt)
        raise database_error(mode, exc) from None
    finally:
        sides.close()
        close_quietly(tgt)
        close_quietly(src)


def _check_distinct(report: Report, section, src, tgt, source_url: str, target_url: str) -> None:
    """Source and target must be two databases, by identity (two names, two
    URL spellings, a pooler: ``shared.identity``), before anything is read."""
    ours, theirs = identify(src, source_url), identify(tgt, target_url)
    report.details["identity"] = {"source": ours.as_dict(), "target": theirs.as_dict()}
    if ours.same_database(theirs):
        raise ConfigError(
            f"content_sync: source {section.source!r} and target {section.target!r} are the same database ({theirs.describe()})"
        )


def close_quietly(conn: psycopg.Connection) -> None:
    """Close (rolling back anything open); errors of a dead connection are moot."""
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


def _run(settings, report, mode, src, tgt, sides, expect_plan, adopt, backup: PresyncBackup, hook: Hook, progress: Meter) -> None:
    sides.both(tune)  # the transactions' first statements: no JIT, work_mem for hash aggregates
    with report.timed("plan"):
        plan = build_plan(settings.config.content_sync, src, tgt)
    writing = mode != "compare"
    if writing:
        tgt.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
    with report.timed("audit"):
        trees, sequences = proof.content_relids(tgt, plan.content)
        allowed = set().union(sequences, *trees.values())
        unsafe, on_read = preconditions(settings.config.content_sync, report, plan, tgt, trees, allowed)
    if unsafe and (writing or on_read):
        if writing:
            report.refuse("nothing run on the target — " + "; ".join(unsafe))
        else:
            report.problems("compare stopped before reading the target — " + "; ".join(unsafe))
        return
    if writing:
        before = start_proof(report, tgt)
        if before is None:
            return
    hashes = {}
    if writing:  # a table the sync will seed: its rows hashed once, for the compare and the seed
        with report.timed("stage"):
            for i, spec in enumerate(ledger.unseeded(tgt, plan.tables)):
                hashes[spec.table] = seed.stage(tgt, spec, i)
    with report.timed("compare"):
        diffs = []
        for spec in plan.tables:
            progress(phase=f"comparing {spec.name}", tables=(len(diffs), len(plan.tables)))
            diffs.append(diff_table(sides, spec, target_hashes=hashes.get(spec.table), expect_changes=True))
        progress(tables=(len(diffs), len(plan.tables)))
        ledgers = ledger.load(tgt, diffs)
        decisions = [classify(d, ledgers[d.spec.table], adopt=adopt, delete_missing=plan.delete_missing) for d in diffs]
    digest = plan_digest(plan, decisions, adopt)
    _describe(report, plan, decisions, digest, src, tgt)
    drifted = [d.spec for d in decisions if d.spec.drift.any]
    drift_text = "; ".join(f"{s.name}: {s.drift.describe()}" for s in drifted)
    blockers = unsafe + _blockers(decisions)
    if not writing:
        _summarise_compare(report, plan, decisions, digest, drift_text, blockers)
        return
    if drifted:
        report.refuse(f"schema drift, nothing synced — {drift_text}")
        return
    if blockers:
        report.refuse("nothing synced — " + "; ".join(blockers))
        return
    if expect_plan and expect_plan != digest:
        report.refuse(f"the plan changed since it was reviewed (expected {expect_plan}, now {digest}); run dry-run again")
        return
    deletes = {d.spec.table: sorted(d.deletes) for d in decisions if d.deletes}
    blocked = [ref for d in decisions if d.spec.table in deletes for ref in apply.protected_references(tgt, plan, d.spec, deletes[d.spec.table])]
    if blocked:
        report.tables["blocked deletes"] = blocked
        report.refuse(
            "delete_missing refused, nothing synced: "
            + "; ".join(f"{b['table']} has {b['rows']} row(s) referencing {b['references']} rows to delete ({b['on_delete']})" for b in blocked)
        )
        return
    if mode == "sync" and ledger.needs_migration(tgt):
        _wait_for_backup(report, backup, progress)  # the migration's ALTER TABLE would queue behind the dump's lock
    watch = ledger_watch.LedgerWatch.before_ensure(tgt)
    ledger_oid = ledger.ensure(tgt)
    watch.after_ensure(tgt)
    with undo_log(settings, report, plan, "sync") as log:
        _write_and_commit(settings, report, mode, plan, decisions, digest, src, tgt, sides, trees, allowed, before, ledger_oid, log, backup, hook, progress, watch)


def undo_log(settings: Settings, report: Report, plan: SyncPlan, action: str, **header: Any) -> contextlib.closing[undolog.Writer]:
    """The run's undo log, spooled while it writes (closed whatever happens)."""
    header = {"run": report.run_id, "action": action, "target": plan.target, **header}
    return contextlib.closing(undolog.Writer(header, enabled=settings.config.content_sync.undo_log))


def _wait_for_backup(report: Report, backup: PresyncBackup, progress: Meter) -> None:
    if "safety_backup" not in report.details:
        progress(phase="waiting for the presync backup")
        with report.timed("safety_backup_wait"):
            report.details["safety_backup"] = backup.wait()


def _write_and_commit(settings, report, mode, plan, decisions, digest, src, tgt, sides, trees, allowed, before, ledger_oid, log, backup, hook, progress, watch: ledger_watch.LedgerWatch) -> None:
    written = _write(report, plan, decisions, src, tgt, log, progress)
    if written is None:
        tgt.rollback()
        return
    tgt.execute("set constraints all immediate")  # deferred constraint triggers fire now, before the rows are checked
    with report.timed("verify"):
        problem = _verify_written(tgt, decisions)
    if problem:
        why = triggers.explain_all(src, tgt, decisions)  # reads the written rows: before the rollback
        drawn = apply.sequences_drawn(tgt, plan)
        tgt.rollback()
        report.details["verified"] = False
        # nothing else writes inside this transaction: the next run would differ the same way
        report.refuse(f"rolled back{_undone(drawn)}: after writing, {problem}" + (f" — {why}" if why else ""))
        return
    with report.timed("ledger"):
        watch.before_record(tgt)
        _record(report, tgt, decisions, log)
    hook("after_write", tgt)
    with report.timed("verify_rest"):
        left = _verify_untouched(sides, decisions, written, trees, before.counters, proof.counters(tgt))
    moves = [m for spec in plan.tables for m in apply.sequence_moves(tgt, spec)]
    report.details["sequences"] = [m.as_row() for m in moves if m.moves]
    unmovable = [c for spec in plan.tables if sum(written.get(spec.name, (0, 0))) for c in apply.unmovable_sequences(spec)]
    if unmovable:
        report.warnings.append(
            "sequence(s) not moved: " + ", ".join(unmovable) + " use a sequence inside an expression, so the synced values "
            "do not say how far it must move; check that the values it hands out next cannot collide with the synced rows"
        )
    beyond = [m.problem for m in moves if m.problem]
    if beyond:  # setval would fail after the proof, when earlier sequences had already moved
        drawn = apply.sequences_drawn(tgt, plan)
        tgt.rollback()
        report.refuse(f"rolled back{_undone(drawn)}: a sequence cannot move past the synced ids — " + "; ".join(beyond))
        return
    logged = log.records > 0
    if logged:
        ledger.record_run(tgt, {"run": report.run_id, "action": "sync", "log": undolog.log_key(report), "sha256": log.finish(), "at": report.started_at.isoformat()})
    watch.after_record(tgt)  # the sync's own ledger writes end here: entries, summaries, the run record
    # The proof is the last thing that reads or writes: deferred triggers queued since (on the ledger, say)
    # fire now, inside what it sees; after it only the sequence moves (pg_catalog.setval: no user code) and COMMIT.
    result = prove(settings, report, plan, tgt, before, allowed, ledger_oid, written, "sync", watch)
    if not result.ok:
        return
    report.details["verified"] = not left
    if left:
        drawn = apply.sequences_drawn(tgt, plan)
        tgt.rollback()
        # as for the written rows: nothing else writes inside this transaction, so the next run would differ the same way
        report.refuse(f"rolled back{_undone(drawn)}: after writing, source and target still differ in {', '.join(left)}")
        return
    if mode == "sync" and any(d.writes or d.deletes for d in decisions):
        _wait_for_backup(report, backup, progress)  # no commit without it
    if logged and mode == "sync":
        with report.timed("undo_log"):
            report.details["undo_log"] = store_log(settings, log, undolog.log_key(report), "sync")
    hook("before_commit", tgt)
    rows = sum(u + d for u, d in written.values())
    tables = len([1 for u, d in written.values() if u or d])
    unseen = sum(1 for f in report.details["side_channels"] if f["acknowledged"])  # ran, and the proof cannot see what they did
    proof_text = f"protection proof ok ({result.checked} other tables untouched" + (
        f"; it cannot see what the {unseen} acknowledged side channel(s) did)" if unseen else ")"
    )
    kept = sum(len(d.kept) + len(d.records.kept) for d in decisions)
    kept_text = f"; {kept} row(s) kept as production has them" if kept else ""
    if mode == "dry-run":
        drawn = apply.sequences_drawn(tgt, plan)
        tgt.rollback()
        if drawn:
            report.details["sequences_drawn"] = drawn
        report.summary = f"dry-run, rolled back{apply.sequences_note(drawn)}: would write {rows} row(s) in {tables} table(s){kept_text}; {proof_text}; plan {digest}"
        return
    with proof.catalog_path(tgt):  # nothing a trigger put on search_path can run here
        apply.move_sequences(tgt, moves)  # not transactional: only after the proof, when nothing can fail before COMMIT
    tgt.commit()
    report.summary = (
        f"synced {rows} row(s) into {tables} table(s){kept_text}; {proof_text}; plan {digest}"
        if rows
        else f"already in sync: nothing written{kept_text}; {proof_text}"
    )


def prove(
    settings: Settings, report: Report, plan: SyncPlan, tgt, before: proof.Start, allowed: set[int], ledger_oid: int, written: dict[str, tuple[int, int]], what: str,
    watch: ledger_watch.LedgerWatch | None = None,
) -> proof.ProofResult:
    """The protection proof, the last statement that reads or writes:
    deferred triggers queued since the last check (on the ledger, say) fire
    first, inside what it sees; after it only the sequence moves
    (pg_catalog.setval: no user code) and COMMIT. Fills the report; rolls
    back and refuses when it fails. ``watch``: what the sync itself did to
    its ledger (``ledger_watch``)."""
    tgt.execute("set constraints all immediate")
    with report.timed("proof"):
        after = proof.finish(tgt)
        past = proof.Past(settings.database_url(plan.target), before.snapshot)
        try:
            result = proof.verify(
                before, after, allowed, ledger=ledger_oid, past=past, conn=tgt, cascaded=_cascaded(plan, written, after),
                ledger_changes=watch.changes(tgt) if watch else (), own_schema=watch.own_schema if watch else None,
            )
        finally:
            past.close()
    report.tables["protection proof"] = result.rows
    report.details["protection_proof"] = {"ok": result.ok, "tables_checked": result.checked, "violations": result.violations}
    if not result.ok:
        drawn = apply.sequences_drawn(tgt, plan)
        tgt.rollback()
        protected_drawn = any("nextval" in c for v in result.violations for c in v["changes"])
        undone = " (except sequence values, which are not transactional)" if protected_drawn and not drawn else _undone(drawn)
        report.refuse(f"rolled back{undone}: the {what} changed protected object(s) {result.describe()} (a trigger, rule or cascade?)")
    return result


def _undone(drawn: list[str]) -> str:
    """", nothing changed" after a rollback, unless the transaction drew
    values from content sequences (``apply.sequences_drawn``): ROLLBACK does
    not give them back."""
    return apply.sequences_note(drawn) or ", nothing changed"


def database_error(what: str, exc: psycopg.Error) -> SafesyncError:
    """A database error inside the write transaction, as the run reports it:
    a refusal when retrying cannot help (the target's constraints reject the
    rows, a privilege or a policy is missing), else a retryable failure."""
    return database_failure(f"{what} rolled back, target unchanged", exc)


def start_proof(report: Report, tgt) -> proof.Start | None:
    """The proof's first snapshot, before the first write (None: refused)."""
    with report.timed("proof_start"):
        before = proof.start(tgt)
    if not before.counting:
        report.refuse(
            "track_counts is off for this session (postgresql.conf, ALTER DATABASE or ALTER ROLE … SET): "
            "the protection proof could not count writes, so nothing was changed; turn track_counts on"
        )
        return None
    if before.settings.get("session_replication_role") == "replica":
        # FK checks and actions are triggers: none fire in replica mode, and
        # neither do the target's own triggers, so a write would skip the
        # rules prod enforces while the proof, counting no trigger writes, passed
        report.refuse(
            "session_replication_role is replica for this session (ALTER DATABASE or ALTER ROLE … SET): the target's "
            "triggers and foreign-key checks would not fire, so nothing was changed; set it back to origin"
        )
        return None
    return before


def preconditions(section, report: Report, plan: SyncPlan, tgt: psycopg.Connection, trees: dict, allowed: set[int]) -> tuple[list[str], bool]:
    """Why this target may not be synced at all, found before anything runs
    there (reported by compare, refused by dry-run and sync), and whether
    one of them would run on a mere read (then compare stops too): side
    channels the proof cannot see (``audit``), unless acknowledged; a role
    that could write protected tables when ``require_least_privilege``
    (otherwise a warning)."""
    out = []
    ledger_oid = tgt.execute("select to_regclass('safesync.content_ledger')::oid").fetchone()[0]
    findings = audit.run(
        tgt,
        trees,
        ledger=ledger_oid,
        fks=plan.target_fks,
        allowed_sequences=allowed,
        acknowledged_tables=section.acknowledge_side_channels,
        acknowledged_event_triggers=section.acknowledge_event_triggers,
        migrating=ledger_oid is not None and ledger.first_format(tgt),
    )
    report.details["side_channels"] = [f.row() for f in findings]
    if findings:
        report.tables["side channels"] = [f.row() for f in findings][:REPORT_ROWS]
    blocking = [f for f in findings if not f.acknowledged]
    if blocking:
        shown = first_few([f.describe() for f in blocking], "; ")
        out.append(
            f"{len(blocking)} side channel(s) the protection proof cannot see: {shown} — remove them, or after review list the table "
            "in content_sync.acknowledge_side_channels (event triggers: acknowledge_event_triggers)"
        )
    for f in findings:
        if f.acknowledged:
            report.warnings.append(f"acknowledged side channel, run by dry-run and sync: {f.describe()}")
    writable = [t.short for t in db.writable_tables(tgt, plan.content)]
    routes = db.definer_routes(tgt, plan.content)
    report.details["least_privilege"] = {"ok": not writable and not routes, "writable_protected": writable[:REPORT_ROWS],
                                         "definer_routes": routes[:REPORT_ROWS]}
    texts = []
    if writable:
        texts.append(f"the target role {tgt.info.user} can write protected table(s) {first_few(writable)}: connect as a role that can only write "
                     "content tables (`safesync roles sql`)")
    if routes:
        texts.append(f"the target role {tgt.info.user} can write protected tables through SECURITY DEFINER routine(s) {first_few(routes)}, "
                     "which run with their owner's rights whatever its grants: revoke EXECUTE on them from PUBLIC and the role, "
                     "or mark them STABLE if they only read")
    for text in texts:
        if section.require_least_privilege:
            out.append(text + " — content_sync.require_least_privilege is on")
        else:
            report.warnings.append(text + "; the protection proof still checks every write")
    return out, any(f.read for f in blocking)


def keys_text(keys: list[Key]) -> str:
    return first_few(["(" + ", ".join(k) + ")" if len(k) > 1 else k[0] for k in keys])


def _blockers(decisions: list[TableDecisions]) -> list[str]:
    """Why a sync of this plan would be refused, one line per cause and table."""
    out = []
    for d in decisions:
        key = ", ".join(d.spec.key)
        if d.collisions:
            out.append(
                f"{d.spec.name}: key collision on {key} {keys_text(d.collisions)} — the target has a different row under the same key "
                f"that safesync never wrote (created in {d.spec.name} on the target); re-key the row in the source, "
                f"or match {d.spec.name} on a natural key ([content_sync.options.{d.spec.name}] match_on = [...])"
            )
        if d.failing:
            out.append(
                f"{d.spec.name}: {len(d.failing)} conflict(s) on {key} {keys_text([c.key for c in d.failing])} — changed in the target since "
                f"the last sync and different from the source; choose with [content_sync.options.{d.spec.name}] "
                'on_conflict = "source" (overwrite) or "target" (keep), or make both sides agree'
            )
        if d.unconfirmed:
            out.append(
                f"{d.spec.name}: {len(d.unconfirmed)} row(s) differ with no ledger history yet ({d.ledger.status}) on {key} "
                f"{keys_text([k for k, _ in d.unconfirmed])} — review them, then run with --adopt (HTTP \"adopt\": true) to take the source's version"
            )
    return out


def _write(report: Report, plan: SyncPlan, decisions: list[TableDecisions], src, tgt, log: undolog.Writer, progress: Meter) -> dict[str, tuple[int, int]] | None:
    """Deletes of rows no content row references first (children first:
    their unique values are free for what replaces them, ``apply.unreferenced``),
    upserts parents first, then the other deletes children first, each after
    its rows' before-images went to the undo log; fills the per-table
    ``written``/``deleted`` columns of the report. Returns per table (rows
    upserted, rows deleted), or None after refusing."""
    written: dict[str, tuple[int, int]] = {}
    rows = {r["table"]: r for r in report.tables["tables"]}
    moved = 0
    deleting = [d for d in reversed(decisions) if d.deletes]
    early: dict[str, int] = {}
    with report.timed("write"):
        tgt.execute("set constraints all deferred")  # only affects deferrable constraints (FK cycles, unique swaps)
        for d in deleting:
            with writing(report, d.spec.name):
                log_images(log, tgt, d.spec, dict.fromkeys(d.deletes))
                early[d.spec.name] = apply.delete_rows(tgt, d.spec, sorted(d.deletes), apply.unreferenced(plan, d.spec))
        for i, d in enumerate(decisions):
            count = 0
            if d.writes:
                temp = apply.temp_name(i)
                with writing(report, d.spec.name):
                    keys = sorted(d.writes)
                    moved += apply.stage_rows(src, tgt, d.spec, keys, temp)
                    missing = apply.unmapped(tgt, d.spec, temp)
                    outward = apply.new_protected_references(tgt, plan, d.spec, temp)
                for ref in outward:
                    report.tables.setdefault("references into protected tables", []).append(ref)
                    report.warnings.append(
                        f"{ref['table']}: {ref['rows']} written row(s) point {ref['columns']} at {ref['references']} rows they did not point at "
                        f"before (e.g. {', '.join(ref['keys'])}; {ref['constraint']}): the ids come from {plan.source}, and in "
                        f"{plan.target} they may name other rows — check them, or leave the column out (ignore_columns)"
                    )
                if missing:
                    report.tables["unmapped references"] = missing
                    report.refuse(
                        "nothing synced: rows reference parents the target does not have — "
                        + "; ".join(f"{m['table']} {m['key']}: {m['column']} → {m['references']}" for m in missing)
                    )
                    return None
                with writing(report, d.spec.name):
                    log_images(log, tgt, d.spec, d.writes)
                    count = apply.upsert(tgt, d.spec, temp, keys)
            written[d.spec.name] = (count, 0)
            rows[d.spec.name]["written"] = count
            progress(phase=f"writing {d.spec.name}", tables=(i + 1, len(decisions)), rows=sum(n for n, _ in written.values()), bytes=moved)
        for d in deleting:
            n = early[d.spec.name]
            if n < len(d.deletes):  # rows content rows pointed at until the upserts re-pointed them
                with writing(report, d.spec.name):
                    n += apply.delete_rows(tgt, d.spec, sorted(d.deletes))
            written[d.spec.name] = (written[d.spec.name][0], n)
            rows[d.spec.name]["deleted"] = n
    report.details["bytes_copied"] = moved
    return written


@contextlib.contextmanager
def writing(report: Report, table: str) -> Iterator[None]:
    """A database error while writing ``table`` names it: the server's
    message rarely does (an INSERT rule, a deferrable key)."""
    try:
        yield
    except psycopg.Error as exc:
        error = database_error(f"{report.action} (writing {table})", exc)
        remedy = ORDER_REMEDIES.get(exc.sqlstate or "")
        if remedy and not (exc.diag.message_primary or "").startswith("update or delete on"):  # a row written, not one deleted
            error.message += f" — {remedy}"
        raise error from None


# Changes no order of writes can pass, and the one remedy: PostgreSQL checks a
# unique or foreign-key constraint that is not deferrable after every row (or
# statement), so rows that exchange values, or reference each other across
# content tables, are refused whichever table or row goes first.
_DEFER = (
    "declare it DEFERRABLE INITIALLY IMMEDIATE (the app sees no change; safesync defers it to its COMMIT) — a unique "
    "index (Prisma's @@unique, Rails' add_index unique: true) becomes such a constraint with ALTER TABLE … ADD CONSTRAINT "
    "name UNIQUE USING INDEX name DEFERRABLE INITIALLY IMMEDIATE"
)
ORDER_REMEDIES = {
    "23505": "either a production row outside this change holds that value, or the changed rows exchange values "
    f"among themselves (a swap or a reorder), which a unique constraint that is not deferrable refuses row by row: {_DEFER}",
    "23503": "either the target lacks the referenced row, or the new rows reference each other across content tables "
    f"(a cycle, e.g. a course's featured lesson), so neither can be written first under a foreign key that is not deferrable: {_DEFER}",
}


def store_log(settings: Settings, log: undolog.Writer, key: str, what: str) -> dict:
    """Store the finished undo log; a run whose log cannot be stored does not commit."""
    try:
        return log.store(settings.storage, key).as_dict()
    except Exception as exc:  # noqa: BLE001 — any failure: the transaction is still open and rolls back
        raise StorageError(f"{what} rolled back, nothing changed: its undo log could not be stored: {redact(str(exc))}") from None


def log_images(log: undolog.Writer, tgt: psycopg.Connection, spec: TableSpec, after: dict[Key, int | None]) -> None:
    """Before-images of the rows with these keys, and the hash each will
    have once written (None: deleted), into the undo log."""
    stored = [c.name for c in db.columns(tgt, spec.table) if not c.generated]
    keys = sorted(after)
    chunks = (undolog.row_images(spec, stored, keys[i : i + apply.CHUNK_KEYS], [after[k] for k in keys[i : i + apply.CHUNK_KEYS]]) for i in range(0, len(keys), apply.CHUNK_KEYS))
    log.section(tgt, {"section": "rows", "table": str(spec.table), "columns": stored, "signature": ledger.signature(spec)}, chunks)


def _verify_written(tgt: psycopg.Connection, decisions: list[TableDecisions]) -> str | None:
    """Every written row now hashes on the target exactly as in the source,
    every deleted row is gone. Returns what is wrong, or None."""
    wrong = []
    for d in decisions:
        now = hashes_by_key(tgt, d.spec, sorted(d.writes)) if d.writes else {}
        bad = triggers.unequal(d, now, list(d.writes))
        gone = hashes_by_key(tgt, d.spec, sorted(d.deletes)) if d.deletes else {}
        found = [
            f"{len(keys)} {what}, e.g. {keys_text(keys)}"
            for keys, what in (
                (bad.missing, "row(s) to write not in the target after the write"),
                (bad.skipped, "updated row(s) still as the target had them"),
                (bad.rewritten, "written row(s) differ from the source"),
                (sorted(gone), "deleted row(s) still there"),
            )
            if keys
        ]
        if found:
            wrong.append(f"{d.spec.name} ({'; '.join(found)})")
    return ("source and target still differ in " + ", ".join(wrong)) if wrong else None


def _record(report: Report, tgt: psycopg.Connection, decisions: list[TableDecisions], log: undolog.Writer) -> None:
    """Write the ledger: written rows as synced (their verified hash),
    target-kept conflicts as kept, deleted rows removed; re-seed the
    entries of equal rows where the ledger is new or not current. A table
    with nothing to record is not touched. The entries of the rows decided
    about go to the undo log as they were and as they are now (re-seeded
    entries of rows nobody wrote stay after an undo: both sides had them)."""
    summary = {}
    for d in decisions:
        d.records.synced.update(d.writes)  # verified equal to the source hashes
        if d.records.reseed or d.records.touched:
            was = ledger.summary_of(tgt, d.ledger.table_id)
            summary[d.spec.name] = done = ledger.apply(tgt, d.spec, d.ledger, d.records, d.unresolved(), d.diff.target_hashes)
            changes = _ledger_changes(d)
            chunks = (undolog.ledger_images(d.spec, changes[i : i + ledger.CHUNK]) for i in range(0, len(changes), ledger.CHUNK))
            log.section(tgt, {"section": "ledger", "table": str(d.spec.table), "table_id": done["table_id"], "summary": was}, chunks)
    report.details["ledger"] = summary


def _ledger_changes(d: TableDecisions) -> list[tuple[Key, tuple, tuple]]:
    """(key, entry before, entry after) of every key the sync recorded,
    each entry as (present, kept, row hash, declined hash)."""
    known = d.ledger.entries if d.ledger.usable else {}

    def entry(e: ledger.Entry | None) -> tuple:
        return (False, None, None, None) if e is None else (True, e.state == "kept", e.row_hash, e.declined_hash)

    out = [(k, entry(known.get(k)), (True, False, h, None)) for k, h in d.records.synced.items()]
    out += [(k, entry(known.get(k)), (True, True, t, s)) for k, (t, s) in d.records.kept.items()]
    out += [(k, entry(known.get(k)), entry(None)) for k in d.records.removed]
    return sorted(out, key=lambda row: row[0])


def _cascaded(plan: SyncPlan, written: dict[str, tuple[int, int]], end: proof.End) -> set[int]:
    """Protected tables an FK action may have locked for writing: they
    reference a content table the sync deleted rows of (ON DELETE CASCADE /
    SET NULL / SET DEFAULT) or updated (ON UPDATE …)."""
    actions = ("CASCADE", "SET NULL", "SET DEFAULT")
    oids = {TableRef(r.schema, r.name): oid for oid, r in end.relations.items()}
    out = set()
    for fk in plan.target_fks:
        upserted, deleted = written.get(fk.ref_table.short, (0, 0))
        if fk.ref_table in plan.content and fk.table not in plan.content and (
            (deleted and fk.on_delete in actions) or (upserted and fk.on_update in actions)
        ):
            out.add(oids.get(fk.table))
    return out - {None}


def _verify_untouched(sides: Sides, decisions: list[TableDecisions], written: dict[str, tuple[int, int]], trees: dict, before, after) -> list[str]:
    """Rows the sync did not write must be as the compare found them. The
    transaction's counters show whether anything but our own statements
    touched a content table; where something did (a trigger, a rule, a
    cascade), that table is compared again in full (the source snapshot has
    not moved) and may differ only where the plan leaves it different."""
    left = []
    for d in decisions:
        upserted, deleted = written.get(d.spec.name, (0, 0))
        touched = proof.writes(before, after, trees[d.spec.table])
        if touched == (upserted, deleted):
            continue
        post = diff_table(sides, d.spec)
        expected = {k: d.diff.changed[k][1] if k in d.diff.changed else d.diff.extra.get(k) for k in d.unresolved()}
        odd = [k for k in post.new if k not in expected or expected[k] is not None]
        odd += [k for k, (_, t) in post.changed.items() if k not in expected or expected[k] != t]
        odd += [k for k, t in post.extra.items() if k not in expected or expected[k] != t]
        if odd:
            left.append(
                f"{d.spec.name} ({len(odd)} row(s), e.g. {keys_text(sorted(odd))}; a trigger or cascade changed content rows the sync "
                "does not write — e.g. production's own rows referencing rows it deleted, ON DELETE SET NULL or CASCADE)"
            )
    return left


# -- the report ------------------------------------------------------------------


def cut(value: str | None) -> str | None:
    if value is None or len(value) <= VALUE_CHARS:
        return value
    return value[: VALUE_CHARS - 1] + "…"


def _differences(spec: TableSpec, keys: list[Key], src, tgt) -> dict[Key, dict[str, tuple[str | None, str | None]]]:
    """column -> (source text, target text) of every differing column of each key."""
    ours, theirs = apply.column_texts(src, spec, keys), apply.column_texts(tgt, spec, keys)
    out = {}
    for k in keys:
        a, b = ours.get(k), theirs.get(k)
        if a is None or b is None:
            out[k] = {}
            continue
        out[k] = {c: (x, y) for c, x, y in zip(spec.columns, a, b) if x != y}
    return out


def _describe(report: Report, plan: SyncPlan, decisions: list[TableDecisions], digest: str, src, tgt) -> None:
    report.details["plan_digest"] = digest
    report.details["fk_order"] = [d.spec.name for d in decisions]
    report.details["protected"] = {
        "listed": [t.short for t in plan.protected_listed],
        "all_other_tables": len(plan.protected_all),
    }
    report.tables["tables"] = [
        {
            "table": d.spec.name,
            "new": len(d.diff.new),
            "changed": len(d.diff.changed),
            "unchanged": d.diff.unchanged,
            "extra": len(d.diff.extra),
            # only where there are some: the table stays narrow enough for a terminal
            **{k: n for k, n in (("conflicts", len(d.conflicts)), ("collisions", len(d.collisions)), ("unconfirmed", len(d.unconfirmed))) if n},
            **({"drift": d.spec.drift.describe()} if d.spec.drift.any else {}),
        }
        for d in decisions
    ]
    report.details["compare"] = {
        d.spec.name: {"queries_per_side": d.diff.queries, "hashes_fetched": d.diff.rows_fetched, "target_hashed_once": d.diff.target_hashes is not None}
        for d in decisions
    }
    report.details["ledger_status"] = {
        d.spec.name: {"status": d.ledger.status, "current": d.ledger.usable and d.ledger.consistent, "kept": len(d.kept), "target_only": len(d.target_only), "adopted": len(d.adopted)}
        for d in decisions
    }
    report.details["matching"] = {d.spec.name: {"match_on": list(d.spec.match_on), "translated": [t.column for t in d.spec.translations]} for d in decisions if d.spec.match_on or d.spec.translations}
    samples, conflicts, collisions, unconfirmed = {}, {}, [], []
    conflict_rows: list[dict] = []
    for d in decisions:
        if not d.diff.differs:
            continue
        spec = d.spec
        changed = sorted(d.diff.changed)[:SAMPLE_KEYS]
        listed_conflicts = d.conflicts[:REPORT_ROWS]
        listed_collisions = d.collisions[:REPORT_ROWS]
        listed_unconfirmed = [k for k, kind in d.unconfirmed[:REPORT_ROWS] if kind == "changed"]
        texts = _differences(spec, sorted({*changed, *(c.key for c in listed_conflicts if c.source_hash is not None and c.target_hash is not None), *listed_collisions, *listed_unconfirmed}), src, tgt)
        samples[spec.name] = {
            "new": [list(k) for k in sorted(d.diff.new)[:SAMPLE_KEYS]],
            "changed": [{"key": list(k), "columns": list(texts.get(k, {}))} for k in changed],
            "extra": [list(k) for k in sorted(d.diff.extra)[:SAMPLE_KEYS]],
        }
        if d.conflicts:
            conflicts[spec.name] = []
            for c in listed_conflicts:
                cols = texts.get(c.key, {})
                what = f"source {c.source_change}, target {c.target_change} since the last sync"
                conflicts[spec.name].append(
                    {"key": list(c.key), "what": what, "resolution": c.resolution, "columns": {n: {"source": cut(a), "target": cut(b)} for n, (a, b) in cols.items()}}
                )
                base = {"table": spec.name, "key": ", ".join(c.key), "what": what, "resolution": c.resolution}
                if not cols:
                    conflict_rows.append({**base, "column": "(whole row)", "source": "absent" if c.source_hash is None else "present", "target": "absent" if c.target_hash is None else "present"})
                for n, (a, b) in cols.items():
                    conflict_rows.append({**base, "column": n, "source": cut(a), "target": cut(b)})
        for k in listed_collisions:
            cols = texts.get(k, {})
            collisions.append(
                {"table": spec.name, "key": ", ".join(k), "differing columns": ", ".join(cols), "source": cut(_row_text(cols, 0)), "target": cut(_row_text(cols, 1)),
                 "fix": f"re-key the row in {plan.source}, or match {spec.name} on a natural key (match_on)"}
            )
        for k, kind in d.unconfirmed[:REPORT_ROWS]:
            cols = texts.get(k, {})
            unconfirmed.append({"table": spec.name, "key": ", ".join(k), "kind": kind, "differing columns": ", ".join(cols) if kind == "changed" else "(only in target)"})
    report.details["samples"] = samples
    if conflicts:
        report.details["conflicts"] = conflicts
        report.tables["conflicts"] = conflict_rows
    if collisions:
        report.tables["key collisions"] = collisions
    if unconfirmed:
        report.tables["unconfirmed (no ledger history)"] = unconfirmed


def _row_text(cols: dict[str, tuple[str | None, str | None]], side: int) -> str:
    return "; ".join(f"{n}={v[side]}" for n, v in list(cols.items())[:3])


def _summarise_compare(report: Report, plan: SyncPlan, decisions: list[TableDecisions], digest: str, drift_text: str, blockers: list[str]) -> None:
    new = sum(len(d.diff.new) for d in decisions)
    changed = sum(len(d.diff.changed) for d in decisions)
    extra = sum(len(d.diff.extra) for d in decisions)
    conflicts = sum(len(d.conflicts) for d in decisions)
    differing = sum(1 for d in decisions if d.diff.differs)
    if drift_text:
        report.problems(f"schema drift (a sync would be refused) — {drift_text}")
    elif blockers:
        report.problems("a sync would be refused — " + "; ".join(blockers))
    elif differing:
        report.summary = (
            f"{plan.source} → {plan.target}: {new} new, {changed} changed, {extra} only in target"
            + (f", {conflicts} conflict(s) resolved by on_conflict" if conflicts else "")
            + f", in {differing} of {len(decisions)} table(s); plan {digest}"
        )
    else:
        report.summary = f"{plan.source} → {plan.target}: all {len(decisions)} content tables identical"
