"""``content undo RUN_ID``: put back exactly what one committed sync (or
undo) changed, in one transaction on the target, keeping everything else.

The run must be recorded in the target (``ledger.runs``: written in its
own transaction, so a run that never committed has nothing to undo) and
its undo log must match the SHA-256 recorded there. Each content table's
logged rows are copied into a temporary table and judged there, set-based:

- a row whose current hash (of the compared columns) is the one the run
  left is put back: an updated row gets its before-image in the columns a
  sync writes (columns it never writes — ignored ones — keep their
  current values), a deleted row is re-inserted with its id and every
  stored column, an inserted row is deleted;
- a row that differs from what the run left is a conflict. When a newer
  recorded run logged the same key, that run is in the way: refused,
  naming it (undo the newer ones first). Otherwise production changed it:
  ``undo_conflict`` (per table like ``on_conflict``) keeps it as it is,
  restores the before-image over it, or (``fail``, the default) refuses,
  showing both versions;
- a row to delete that a protected row references is refused naming the
  referencing table: nothing cascades.

Then every put-back row is checked (hash equals the before-image's, deleted
rows gone), the transaction's counters must show no content row touched
beyond those (no trigger or cascade), ledger entries are restored where
they still hold what the run recorded (compare-and-set), the protection
proof runs (with the sync's ledger watch: only the undo's own statements may
change the ledger), the undo's own log is stored (an undo is undoable) and it
commits. Sequences stay where they are. ``--dry-run`` does all of it and
rolls back, printing a plan digest that ``--expect-plan`` pins.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import psycopg
from psycopg import sql

from safesync.shared import db, pgarray, rowhash
from safesync.shared.config import Settings
from safesync.shared.db import TableRef, connect
from safesync.shared.errors import BadRequest, NotFoundError, Refused
from safesync.shared.report import Report
from safesync.shared.rowdiff import Key, tune

from . import apply, job, ledger, ledger_watch, proof, undolog
from .plan import SyncPlan, TableSpec, build_plan

RUN_ID = re.compile(r"[0-9a-f]{12}")
REPORT_ROWS = job.REPORT_ROWS


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise BadRequest("run must be the 12-hex run id of a content sync (the run_id of its report)")
    return run_id


def run(settings: Settings, report: Report, run_id: str, *, dry_run: bool, expect_plan: str | None, hook: job.Hook | None = None) -> None:
    section = settings.config.content_sync
    report.details.update(target=section.target, mode="undo", undoes=run_id, dry_run=dry_run)
    tgt = connect(settings.database_url(section.target), application_name="safesync-content-undo")
    try:
        tgt.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        tgt.execute("set idle_in_transaction_session_timeout = 0")
        _undo(settings, report, tgt, run_id, dry_run, expect_plan, hook or (lambda step, conn: None))
    except psycopg.Error as exc:
        job.close_quietly(tgt)
        raise job.database_error("undo", exc) from None
    finally:
        job.close_quietly(tgt)


def _find(settings: Settings, records: list[dict], run_id: str) -> int:
    """The run's position among the recorded runs (refusals name why not)."""
    for i, record in enumerate(records):
        if record["run"] == run_id:
            return i
    if any(o.key.endswith(f"-{run_id}{undolog.SUFFIX}") for o in settings.storage.list("runs/content_sync/")):
        raise Refused(
            f"run {run_id} has an undo log but the target has no record of it: it did not commit (killed or rolled "
            "back before COMMIT), or the target is no longer the database it synced (restored from an earlier "
            "backup, or another database); there is nothing to undo here"
        )
    raise NotFoundError(f"no committed content sync or undo with run id {run_id} on the target")


def _undone_by(records: list[dict], run_id: str) -> str | None:
    """The live undo of ``run_id`` (an undo that was itself undone does not count)."""
    for record in records:
        if record.get("undoes") == run_id and _undone_by(records, record["run"]) is None:
            return record["run"]
    return None


def _undo(settings: Settings, report: Report, tgt: psycopg.Connection, run_id: str, dry_run: bool, expect_plan: str | None, hook: job.Hook) -> None:
    section = settings.config.content_sync
    tune(tgt)
    tgt.execute(f"set local lock_timeout = '{job.LOCK_TIMEOUT}'")
    records = ledger.runs(tgt)
    position = _find(settings, records, run_id)
    record = records[position]
    undone = _undone_by(records[position + 1 :], run_id)
    if undone:
        report.refuse(f"run {run_id} was already undone by run {undone} (undo {undone} to bring its changes back)")
        return
    with report.timed("plan"):
        plan = build_plan(section, tgt, tgt)  # the target's own shape: the sync refused on any drift from the source
    with report.timed("audit"):
        trees, sequences = proof.content_relids(tgt, plan.content)
        allowed = set().union(sequences, *trees.values())
        unsafe, _ = job.preconditions(section, report, plan, tgt, trees, allowed)
    if unsafe:
        report.refuse("nothing run on the target — " + "; ".join(unsafe))
        return
    before = job.start_proof(report, tgt)
    if before is None:
        return
    with report.timed("fetch_log"):  # the fetch, checksum and index only: the undo itself is timed by its phases
        log = undolog.Log(settings.storage, record["log"], record["sha256"])
    with log:
        report.details["log"] = {"key": record["log"], "sha256": record["sha256"], "records": log.records, "action": log.header["action"]}
        _undo_logged(settings, report, tgt, plan, records[position + 1 :], log, run_id, trees, allowed, before, dry_run, expect_plan, hook)


class Table:
    """One content table's logged rows, staged and judged on the target."""

    def __init__(self, tgt: psycopg.Connection, index: int, spec: TableSpec, stored: list[str]) -> None:
        self.tgt, self.spec, self.stored = tgt, spec, stored
        self.name = f"safesync_undo_{index}"
        self.temp = sql.Identifier(self.name)
        self.counts: dict[str, int] = {}
        self.conflicts: list[Key] = []

    def match(self, alias: str) -> sql.Composable:
        """``alias`` (a table or the relation as compared) is the staged row's key."""
        return sql.SQL(" and ").join(
            sql.SQL("{} = u.{}::{}").format(sql.Identifier(alias, k), sql.Identifier(f"c{i}"), sql.SQL(t))
            for i, (k, t) in enumerate(zip(self.spec.key, self.spec.key_types))
        )

    def stage(self, log: undolog.Log) -> None:
        """Copy the logged rows in; note which exist now, with which hash."""
        tgt, n = self.tgt, len(self.spec.key)
        keys = [sql.SQL("null::text as {}").format(sql.Identifier(f"c{i}")) for i in range(n)]
        tgt.execute(
            sql.SQL(
                "create temp table {u} on commit drop as select {keys}, null::bigint as after, null::boolean as present, null::bigint as before, "
                "{cols}, null::bigint as cur, false as here, false as skip from {table} as r with no data"
            ).format(u=self.temp, keys=sql.SQL(", ").join(keys), cols=sql.SQL(", ").join(sql.Identifier("r", c) for c in self.stored), table=self.spec.table.ident)
        )
        tgt.execute(sql.SQL("alter table {} alter column here set default false, alter column skip set default false").format(self.temp))
        names = [f"c{i}" for i in range(n)] + ["after", "present", "before", *self.stored]
        with tgt.cursor() as cur, cur.copy(sql.SQL("copy {} ({}) from stdin").format(self.temp, sql.SQL(", ").join(map(sql.Identifier, names)))) as copy:
            for part in log.of("rows", str(self.spec.table)):
                for data in log.chunks(part):
                    copy.write(data)
        tgt.execute(
            sql.SQL("update {u} as u set here = true, cur = {h} from {rel} where {match}").format(
                u=self.temp, h=rowhash.row_hash(self.spec, "t"), rel=self.spec.from_item("t"), match=self.match("t")
            )
        )
        self.conflicts = self.keys(sql.SQL("u.cur is distinct from u.after"))

    def keys(self, where: sql.Composable) -> list[Key]:
        query = sql.SQL("select {} from {} as u where {} order by 1").format(undolog.key_texts(self.spec, "u"), self.temp, where)
        return [tuple(r) for r in self.tgt.execute(query)]

    def keep_conflicts(self) -> None:
        self.tgt.execute(sql.SQL("update {} set skip = true where cur is distinct from after").format(self.temp))

    def tally(self) -> dict[str, Any]:
        row = self.tgt.execute(
            sql.SQL(
                "select count(*) filter (where present and here and not skip), count(*) filter (where present and not here and not skip), "
                "count(*) filter (where not present and here and not skip), count(*) filter (where skip) from {}"
            ).format(self.temp)
        ).fetchone()
        self.counts = dict(zip(("restore", "reinsert", "remove", "kept"), row))
        return {"table": self.spec.name, **self.counts, **({"conflicts": len(self.conflicts)} if self.conflicts else {})}

    def log_current(self, out: undolog.Writer) -> None:
        """The undo's own log: each row as it is now, and the hash it will have."""
        query = sql.SQL(
            "select {keys}, u.before, u.here, u.cur, {cols} from {u} as u left join {table} as r on {match} where not u.skip and (u.present or u.here)"
        ).format(keys=undolog.key_texts(self.spec, "u"), cols=sql.SQL(", ").join(sql.Identifier("r", c) for c in self.stored), u=self.temp, table=self.spec.table.ident, match=self.match("r"))
        out.section(self.tgt, {"section": "rows", "table": str(self.spec.table), "columns": self.stored, "signature": ledger.signature(self.spec)}, [(query, [])])

    def put_back(self) -> int:
        """Updated rows to their before-image, deleted rows re-inserted."""
        spec, count = self.spec, 0
        update = spec.update_columns
        if update:
            count += self.tgt.execute(
                sql.SQL("update {table} as r set {sets} from {u} as u where {match} and u.present and u.here and not u.skip").format(
                    table=spec.table.ident,
                    sets=sql.SQL(", ").join(sql.SQL("{0} = u.{0}").format(sql.Identifier(c)) for c in update),
                    u=self.temp,
                    match=self.match("r"),
                )
            ).rowcount
        cols = sql.SQL(", ").join(map(sql.Identifier, self.stored))
        overriding = sql.SQL(" overriding system value") if spec.identity_always & set(self.stored) else sql.SQL("")
        count += self.tgt.execute(
            sql.SQL("insert into {table} ({cols}){overriding} select {cols} from {u} where present and not here and not skip").format(
                table=spec.table.ident, cols=cols, overriding=overriding, u=self.temp
            )
        ).rowcount
        return count

    def remove(self, where: sql.Composable = sql.SQL("true")) -> int:
        """Rows the run inserted (those matching ``where``, on alias ``r``), deleted."""
        return self.tgt.execute(
            sql.SQL("delete from {table} as r using {u} as u where {match} and not u.present and u.here and not u.skip and {where}").format(
                table=self.spec.table.ident, u=self.temp, match=self.match("r"), where=where
            )
        ).rowcount

    def removing(self, alias: str) -> sql.Composable:
        """``alias``, a row of this table, is one the undo deletes."""
        return sql.SQL("exists (select from {} as u where {} and not u.present and u.here and not u.skip)").format(self.temp, self.match(alias))

    def held(self, plan: SyncPlan, tables: list[Table]) -> list[Key]:
        """Rows the run inserted, still to delete, that content rows the undo
        leaves in place reference (production wrote them since, or a kept
        conflict): deleting would fail, or cascade into them. Rows the undo
        deletes too (a cycle of deferrable keys) do not hold them."""
        undone = {t.spec.table: t for t in tables}

        def leaving(child: TableRef) -> sql.Composable | None:
            return undone[child].removing("safesync_ref") if child in undone else None

        return self.keys(
            sql.SQL("not u.present and u.here and not u.skip and exists (select from {table} as r where {match} and not ({free}))").format(
                table=self.spec.table.ident, match=self.match("r"), free=apply.unreferenced(plan, self.spec, "r", leaving)
            )
        )

    def wrong(self) -> list[Key]:
        """Rows not as their before-image after the undo wrote (absent where they were)."""
        return self.keys(
            sql.SQL("not u.skip and u.before is distinct from (select {h} from {rel} where {match})").format(
                h=rowhash.row_hash(self.spec, "t"), rel=self.spec.from_item("t"), match=self.match("t")
            )
        )

    def texts(self, keys: list[Key]) -> list[dict]:
        """Both versions of each conflicting row's differing columns: what the undo would restore, what production has."""
        spec = self.spec
        now = apply.column_texts(self.tgt, spec, keys)
        names = [c for c in spec.columns if c in self.stored]
        restore = {
            tuple(r[: len(spec.key)]): r[len(spec.key) :]
            for r in self.tgt.execute(
                sql.SQL("select {}, u.present, {} from {} as u where ({}) in (select * from unnest({}))").format(
                    undolog.key_texts(spec, "u"),
                    sql.SQL(", ").join(sql.SQL("u.{}::text").format(sql.Identifier(c)) for c in names),
                    self.temp,
                    undolog.key_texts(spec, "u"),
                    sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in spec.key),
                ),
                pgarray.columns(keys, len(spec.key)),
            )
        }
        rows = []
        for key in keys:
            old, cur = restore.get(key), now.get(key)
            base = {"table": spec.name, "key": ", ".join(key)}
            if old is None or not old[0] or cur is None:
                rows.append({**base, "column": "(whole row)", "restore": "present" if old and old[0] else "absent", "production": "absent" if cur is None else "present"})
                continue
            values = dict(zip(spec.columns, cur))
            rows += [
                {**base, "column": c, "restore": job.cut(v), "production": job.cut(values.get(c))}
                for c, v in zip(names, old[1:])
                if v != values.get(c)
            ]
        return rows


def _tables(tgt: psycopg.Connection, plan: SyncPlan, log: undolog.Log) -> list[Table] | str:
    """The logged tables, in the plan's FK order, or why they cannot be undone."""
    logged = {s.meta["table"]: s.meta for s in log.sections if s.meta["section"] == "rows"}
    specs = {str(s.table): s for s in plan.tables}
    gone = sorted(set(logged) - set(specs))
    if gone:
        return f"{', '.join(gone)} no longer listed in content_sync.tables"
    out, changed = [], []
    for i, spec in enumerate(s for s in plan.tables if str(s.table) in logged):
        stored = [c.name for c in db.columns(tgt, spec.table) if not c.generated]
        meta = logged[str(spec.table)]
        if meta["signature"] != ledger.signature(spec) or meta["columns"] != stored:
            changed.append(spec.name)
        out.append(Table(tgt, i, spec, stored))
    if changed:
        return f"the schema of {', '.join(changed)} changed since that run (its columns, key or types)"
    return out


def _in_the_way(settings: Settings, newer: list[dict], tables: list[Table]) -> dict[str, list[str]]:
    """Newer recorded runs whose logs hold a conflicting key: run id -> tables."""
    found: dict[str, list[str]] = {}
    wanted = {str(t.spec.table): (set(t.conflicts), len(t.spec.key)) for t in tables if t.conflicts}
    for record in newer if wanted else []:
        with undolog.Log(settings.storage, record["log"], record["sha256"]) as log:
            for name, (keys, width) in wanted.items():
                if any(k in keys for part in log.of("rows", name) for k in log.keys(part, width)):
                    found.setdefault(record["run"], []).append(name)
    return found


def _resolution(section, spec: TableSpec) -> str:
    """``undo_conflict`` of the table (its options, else the section's)."""
    options = {TableRef.parse(name): o for name, o in section.options.items()}.get(spec.table)
    return (options.undo_conflict if options else None) or section.undo_conflict


def _digest(run_id: str, sha256: str, tables: list[Table], resolutions: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"undo": run_id, "log": sha256}, sort_keys=True).encode() + b"\n")
    for t in tables:
        line = {"table": str(t.spec.table), **t.counts, "resolution": resolutions[t.spec.name], "conflicts": [list(k) for k in t.conflicts]}
        h.update(json.dumps(line, sort_keys=True).encode() + b"\n")
    return h.hexdigest()


def _undo_logged(settings, report, tgt, plan, newer, log, run_id, trees, allowed, before, dry_run, expect_plan, hook: job.Hook) -> None:
    section = settings.config.content_sync
    tables = _tables(tgt, plan, log)
    if isinstance(tables, str):
        report.refuse(f"undo of {run_id} refused, nothing changed: {tables}")
        return
    with report.timed("compare"):
        for t in tables:
            t.stage(log)
    way = _in_the_way(settings, newer, tables)
    if way:
        report.tables["in the way"] = [{"run": r, "tables": ", ".join(names)} for r, names in way.items()]
        report.refuse(
            f"undo of {run_id} refused, nothing changed: newer run(s) changed the same rows since — "
            + "; ".join(f"{r} ({', '.join(names)})" for r, names in way.items())
            + " — undo those first, newest first"
        )
        return
    resolutions = {t.spec.name: _resolution(section, t.spec) for t in tables}
    conflict_rows, failing = [], []
    for t in tables:
        if not t.conflicts:
            continue
        conflict_rows += [{**row, "resolution": resolutions[t.spec.name]} for row in t.texts(t.conflicts[:REPORT_ROWS])]
        if resolutions[t.spec.name] == "keep":
            t.keep_conflicts()
        elif resolutions[t.spec.name] == "fail":
            failing.append(f"{t.spec.name}: {len(t.conflicts)} row(s) changed in production since run {run_id}, on {', '.join(t.spec.key)} {job.keys_text(t.conflicts)}")
    if conflict_rows:
        report.tables["conflicts"] = conflict_rows
    report.tables["tables"] = [t.tally() for t in tables]
    digest = _digest(run_id, log_sha(report), tables, resolutions)
    report.details["plan_digest"] = digest
    if failing:
        report.refuse(
            f"undo of {run_id} refused, nothing changed — " + "; ".join(failing)
            + ' — choose with [content_sync.options.<table>] undo_conflict = "keep" (leave production\'s version) or "restore" (put the before-image back)'
        )
        return
    if expect_plan and expect_plan != digest:
        report.refuse(f"the undo plan changed since it was reviewed (expected {expect_plan}, now {digest}); run undo --dry-run again")
        return
    blocked = [ref for t in tables for ref in apply.protected_references(tgt, plan, t.spec, t.keys(sql.SQL("not u.present and u.here and not u.skip")))]
    if blocked:
        report.tables["blocked deletes"] = blocked
        report.refuse(
            f"undo of {run_id} refused, nothing changed: rows the sync inserted are referenced by protected rows — "
            + "; ".join(f"{b['table']} has {b['rows']} row(s) referencing {b['references']} ({b['constraint']}, on delete {b['on_delete']})" for b in blocked)
        )
        return
    watch = ledger_watch.LedgerWatch.before_ensure(tgt)
    ledger_oid = ledger.ensure(tgt)
    watch.after_ensure(tgt)
    with job.undo_log(settings, report, plan, "undo", undoes=run_id) as out:
        _write_and_commit(settings, report, tgt, plan, tables, log, out, run_id, digest, trees, allowed, before, ledger_oid, dry_run, hook, watch)


def log_sha(report: Report) -> str:
    return report.details["log"]["sha256"]


def _write_and_commit(
    settings, report, tgt, plan, tables: list[Table], log, out: undolog.Writer, run_id, digest, trees, allowed, before, ledger_oid, dry_run, hook,
    watch: ledger_watch.LedgerWatch,
) -> None:
    written: dict[str, tuple[int, int]] = {}
    with report.timed("write"):
        tgt.execute("set constraints all deferred")
        for t in tables:
            t.log_current(out)
        early: dict[str, int] = {}
        for t in reversed(tables):  # children first, as a sync orders its writes
            with job.writing(report, t.spec.name):
                early[t.spec.name] = t.remove(apply.unreferenced(plan, t.spec, "r"))
        for t in tables:  # parents first
            with job.writing(report, t.spec.name):
                written[t.spec.name] = (t.put_back(), 0)
        for t in reversed(tables):  # children first: what still references a row now is not the undo's to change
            held = t.held(plan, tables)
            if held:
                tgt.rollback()
                sources = sorted({fk.table.short for fk in plan.referencing(t.spec.table) if fk.table in plan.content})
                report.refuse(
                    f"undo of {run_id} rolled back, nothing changed: {len(held)} row(s) of {t.spec.name} the run inserted "
                    f"({job.keys_text(held)}) are referenced by {', '.join(sources)} rows production changed since (or a kept "
                    "conflict): the undo deletes neither those rows nor the references — change or delete them first"
                )
                return
            with job.writing(report, t.spec.name):
                written[t.spec.name] = (written[t.spec.name][0], early[t.spec.name] + t.remove())
    tgt.execute("set constraints all immediate")
    with report.timed("verify"):
        wrong = {t.spec.name: t.wrong() for t in tables}
        wrong = {name: keys for name, keys in wrong.items() if keys}
        counters = proof.counters(tgt)
        odd = [t.spec.name for t in tables if proof.writes(before.counters, counters, trees[t.spec.table]) != written[t.spec.name]]
    if wrong or odd:
        tgt.rollback()
        what = [f"{name} ({len(keys)} row(s) not as before the run, e.g. {job.keys_text(keys)})" for name, keys in wrong.items()]
        what += [f"{name} (a trigger, rule or cascade changed rows the undo did not)" for name in odd if name not in wrong]
        report.details["verified"] = False
        report.refuse(f"undo of {run_id} rolled back, nothing changed: after writing, " + "; ".join(what))
        return
    report.details["verified"] = True
    with report.timed("ledger"):
        watch.before_record(tgt)
        report.details["ledger"] = {t.spec.name: _restore_ledger(tgt, t, log, out) for t in tables}
    hook("after_write", tgt)
    ledger.record_run(tgt, {"run": report.run_id, "action": "undo", "undoes": run_id, "log": undolog.log_key(report), "sha256": out.finish(), "at": report.started_at.isoformat()})
    watch.after_record(tgt)  # the undo's own ledger writes end here, as a sync's do
    result = job.prove(settings, report, plan, tgt, before, allowed, ledger_oid, written, "undo", watch)
    if not result.ok:
        return
    rows = sum(a + b for a, b in written.values())
    proof_text = f"protection proof ok ({result.checked} other tables untouched)"
    kept = sum(t.counts.get("kept", 0) for t in tables)
    kept_text = f"; {kept} conflicting row(s) kept as production has them" if kept else ""
    if dry_run:
        tgt.rollback()
        report.summary = f"undo dry-run, rolled back: would put back {rows} row(s) of run {run_id}{kept_text}; {proof_text}; plan {digest}"
        return
    with report.timed("undo_log"):
        report.details["undo_log"] = job.store_log(settings, out, undolog.log_key(report), "undo")
    hook("before_commit", tgt)
    tgt.commit()
    report.summary = f"undid run {run_id}: put back {rows} row(s){kept_text}; {proof_text}; undo it with `safesync content undo {report.run_id}`"


def _restore_ledger(tgt: psycopg.Connection, t: Table, log: undolog.Log, out: undolog.Writer) -> dict[str, int]:
    """Ledger entries back to what they were before the run, where they
    still hold what it recorded; the summary re-added; the undo's own log
    gets the entries as they are now."""
    parts = log.of("ledger", str(t.spec.table))
    if not parts:
        return {"restored": 0}
    table_id = parts[0].meta["table_id"]
    spec, n = t.spec, len(t.spec.key)
    temp = sql.Identifier(f"{t.name}_ledger")
    fields = undolog.LEDGER_FIELDS
    cols = [sql.SQL("{} text").format(sql.Identifier(f"c{i}")) for i in range(n)]
    cols += [sql.SQL("{} {}").format(sql.Identifier(f), sql.SQL("boolean" if f[1] in "pk" else "bigint")) for f in fields]
    tgt.execute(sql.SQL("create temp table {} ({}, e bigint, cas boolean) on commit drop").format(temp, sql.SQL(", ").join(cols)))
    names = sql.SQL(", ").join(map(sql.Identifier, [f"c{i}" for i in range(n)] + list(fields)))
    with tgt.cursor() as cur, cur.copy(sql.SQL("copy {} ({}) from stdin").format(temp, names)) as copy:
        for part in parts:
            for data in log.chunks(part):
                copy.write(data)
    entry = ledger.entry_of(table_id, [sql.Identifier("x", f"c{i}") for i in range(n)])
    now = sql.SQL("(select (coalesce(l.kept, false), l.row_hash, l.declined_hash) from safesync.content_ledger as l where l.entry = x.e)")
    tgt.execute(sql.SQL("update {} as x set e = {}").format(temp, entry))
    tgt.execute(
        sql.SQL("update {t} as x set cas = case when x.ap then {now} is not distinct from (x.ak, x.ah, x.ad) else {now} is null end").format(t=temp, now=now)
    )
    out.section(
        tgt,
        {"section": "ledger", "table": str(spec.table), "table_id": table_id, "summary": ledger.summary_of(tgt, table_id)},
        [(sql.SQL(
            "select {keys}, l.entry is not null, coalesce(l.kept, false), l.row_hash, l.declined_hash, x.bp, x.bk, x.bh, x.bd "
            "from {t} as x left join safesync.content_ledger as l on l.entry = x.e where x.cas"
        ).format(keys=undolog.key_texts(spec, "x"), t=temp), [])],
    )
    tgt.execute(sql.SQL("delete from safesync.content_ledger as l using {} as x where l.entry = x.e and x.cas and x.ap").format(temp))
    restored = tgt.execute(
        sql.SQL(
            "insert into safesync.content_ledger (entry, row_hash, kept, declined_hash) "
            "select distinct on (x.e) x.e, x.bh, case when x.bk then true end, x.bd from {} as x where x.cas and x.bp "
            "on conflict (entry) do nothing"  # two keys sharing an entry: one is kept (the summary then never matches)
        ).format(temp)
    ).rowcount
    ledger.resummarise(tgt, table_id, parts[0].meta["summary"])
    return {"restored": restored, "left_as_is": tgt.execute(sql.SQL("select count(*) from {} where not cas").format(temp)).fetchone()[0]}

