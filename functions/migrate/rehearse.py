"""``safesync migrate rehearse``: the migration on a fresh clone of the target.

1. Guard the scratch database: never the target, never a protected database
   (``prod``, one of ``backup.databases``, the content-sync target), never
   the same database as one of them under another name or URL (by
   identity) — it is overwritten.
2. Clone the target into it with the staging-clone machinery (one
   transaction, masks of ``[staging_clone]`` applied). Every user schema of
   the target is cloned, ``safesync`` included (so the clone knows which
   files were applied); schemas only the scratch has (an earlier
   rehearsal's) are dropped first.
3. Baseline validation on the clone, then the migration with the same code,
   timeouts and transaction mode as ``apply``, then validation again.
4. Schema + data diff of target vs rehearsal: exactly what the migration
   changes. Nothing touches the target (it is only read).
5. The rehearsal passes only if the migration and validation succeeded and
   it loses none of the target's existing data (``loss``) beyond what
   ``[migrate] allow_data_loss`` accepts.

The report is stored under ``runs/migrate/`` like every run, with the
plan's digest: that stored report *is* the rehearsal record ``apply`` looks
for (``latest_passing``). Storage rather than the target's ``safesync``
schema because a rehearsal must not write to the target, and because the
report that proves the rehearsal is the one people read.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from safesync.shared import identity, preflight, runs
from safesync.shared.config import Settings
from safesync.shared.db import TableRef, connect, list_tables, table_fingerprint, table_shapes, user_schema
from safesync.shared.errors import ConfigError, JobFailed, Refused
from safesync.shared.log import redact
from safesync.shared.report import Report, first_few, utcnow

from . import loss, migration, validation
from .plan import Plan, build_plan

USER_SCHEMAS_SQL = f"""
select n.nspname from pg_namespace n
where {user_schema(ours=True)}
  and not exists (select 1 from pg_depend d where d.classid = 'pg_namespace'::regclass and d.objid = n.oid and d.deptype = 'e')
order by 1
"""


def user_schemas(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(USER_SCHEMAS_SQL).fetchall()]


def check_scratch(settings: Settings) -> str:
    """The scratch database's URL, or Refused/ConfigError when rehearsing
    there could overwrite something that matters: the target or a protected
    database, by name or by identity (``shared.identity``)."""
    cfg = settings.config.migrate
    scratch = settings.check_database(cfg.rehearse_on)
    if scratch == cfg.database:
        raise ConfigError(f"migrate.rehearse_on must differ from migrate.database ({scratch!r}): it is overwritten")
    if scratch in identity.protected_names(settings):
        raise Refused(
            f"refusing to rehearse on {scratch!r}: it is a protected database (named prod, listed in "
            "backup.databases or the content-sync target) and a rehearsal overwrites it; point migrate.rehearse_on at a scratch database"
        )
    found = identity.protected_aliases(settings, scratch, identity.protected_names(settings, cfg.database))
    if found.same:
        raise Refused(f"refusing to rehearse: {scratch!r} is the same database as {', '.join(map(repr, found.same))} ({found.identity.describe()})")
    if found.unknown:
        raise Refused(f"refusing to rehearse on {scratch!r}: cannot tell whether it is " + ", ".join(f"{n!r} ({why})" for n, why in found.unknown.items()))
    return settings.database_url(scratch)


def hold_snapshot(url: str) -> tuple[psycopg.Connection, str]:
    """A read-only REPEATABLE READ transaction on the target and its
    exported snapshot: the state the rehearsal clones, and later compares
    the rehearsal with — so what the application writes to the target
    meanwhile is not mistaken for something the migration did."""
    conn = connect(url, application_name="safesync-migrate")
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    conn.execute("set idle_in_transaction_session_timeout = 0")  # held open while the migration runs on the scratch
    return conn, conn.execute("select pg_export_snapshot()").fetchone()[0]


def rehearsed_schemas(settings: Settings, held: psycopg.Connection) -> tuple[list[str], list[str]]:
    """(the schemas the rehearsal clones — ``[migrate] schemas``, else every
    user schema — with ``safesync`` when the target has it, so the clone
    knows which files were applied; every user schema of the target)."""
    everything = user_schemas(held)
    wanted = settings.config.migrate.schemas
    if wanted is None:
        return everything, everything
    missing = [s for s in wanted if s not in everything]
    if missing:
        raise ConfigError(f"migrate.schemas: {', '.join(missing)} not in the target {settings.config.migrate.database!r}")
    return [s for s in everything if s in wanted or s == "safesync"], everything


def clone_into_scratch(
    settings: Settings, held: psycopg.Connection, snapshot: str, url: str, scratch_url: str, report: Report
) -> tuple[Any, list[str], Any]:
    """Clone the target as ``held`` sees it (its exported ``snapshot``) into
    the scratch database; returns (clone options, the rehearsed schemas
    compared afterwards, the clone's plan: what the comparison leaves out)."""
    from safesync.functions.staging_clone import clone_database, options_from_config

    schemas, everything = rehearsed_schemas(settings, held)
    tables = set(list_tables(held, schemas))
    with connect(scratch_url, autocommit=True, application_name="safesync-migrate-scratch") as conn:
        stale = [s for s in user_schemas(conn) if s not in everything]
        with conn.transaction():
            for schema in stale:
                conn.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(schema)))
    if stale:
        report.details["scratch_schemas_dropped"] = stale
    base = options_from_config(settings)
    masks = tuple(m for m in base.masks if m.table in tables)
    skipped = sorted({str(m.table) for m in base.masks if m.table not in tables})
    if skipped:
        report.warnings.append(f"staging_clone masks for table(s) the target lacks were skipped: {', '.join(skipped)}")
    options = dataclasses.replace(
        base, schemas=tuple(schemas), masks=masks, exclude_table_data=tuple(t for t in base.exclude_table_data if t in tables)
    )
    try:
        cloned = clone_database(url, scratch_url, options, report=report, compare_after=False, snapshot=snapshot)
    except Refused as exc:
        if settings.config.migrate.schemas is not None:
            raise
        raise Refused(
            f"{exc.message} — the rehearsal clones every user schema of the target; set [migrate] schemas to those "
            'your migrations change and reference (on Supabase: ["public", "auth", "storage"])',
            exc.detail,
        ) from None
    return options, [s for s in schemas if s != "safesync"], cloned.plan


def outside_schemas(conn: psycopg.Connection, rehearsed: list[str]) -> list[str]:
    """The scratch's schemas the rehearsal neither clones nor compares."""
    return [s for s in user_schemas(conn) if s not in rehearsed and s != "safesync"]


def outside_fingerprint(conn: psycopg.Connection, schemas: list[str]) -> dict[str, Any]:
    """Fingerprints of the scratch's readable tables in ``schemas``
    (``outside_schemas``: those ``[migrate] schemas`` leaves out — an older
    copy of the target's, or the scratch platform's own). Their data is not
    the target's, so a migration that deletes or rewrites rows there shows
    no loss — apply would then do it to the target's real data. Taken
    before and after the migration: any change fails the rehearsal, naming
    the table."""
    if not schemas:
        return {}
    readable = [
        TableRef(schema, name)
        for schema, name in conn.execute(
            "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where c.relkind in ('r', 'p') and not c.relispartition and n.nspname = any(%s)"
            " and has_table_privilege(c.oid, 'select') order by 1, 2",
            [schemas],
        ).fetchall()
    ]
    shapes = table_shapes(conn, sorted({t.schema for t in readable}))
    out: dict[str, Any] = {}
    for table in readable:
        cols = [(n, ty) for n, ty, _ in shapes[table][0]]
        out[str(table)] = (cols, table_fingerprint(conn, table, cols))
    return out


def _compare(
    held: psycopg.Connection, scratch_url: str, schemas: list[str], cloned: Any
) -> tuple[Any, list[loss.Loss], frozenset[str]]:
    """The target as cloned (``held``) vs the rehearsal, over the rehearsed
    schemas and any the migration created, leaving out what the clone's
    plan (``cloned``) says the comparison cannot see: masked columns
    excluded, tables without data and views derived from them or from
    masked columns only counted; what of the target's data the migration
    loses; and the table names several compared schemas share
    (``loss.shared_names``)."""
    from safesync.functions.validate import compare

    with connect(scratch_url, application_name="safesync-migrate-scratch") as b:
        b.read_only = True
        # the rehearsed schemas, and those the migration created (not the scratch's own others)
        created = set(user_schemas(b)) - set(user_schemas(held))
        compared = sorted((set(schemas) | created) - {"safesync"})
        try:
            comparison = compare(held, b, compared, exclude_columns=cloned.masked, count_only=cloned.uncompared, limit=loss.LIMIT)
            return comparison, loss.find(comparison, held, b, compared), loss.shared_names(held, compared)
        except psycopg.Error as exc:  # the snapshot keeps the target's rows, not its table definitions
            raise JobFailed(
                f"comparing the target with the rehearsal failed: {redact(str(exc)).strip()} — if the target's schema "
                "changed while rehearsing (DDL by another session), rehearse again"
            ) from None


def run_rehearse(settings: Settings, report: Report) -> None:
    cfg = settings.config.migrate
    db, scratch = cfg.database, cfg.rehearse_on
    scratch_url = check_scratch(settings)
    url = settings.database_url(db)
    plan = build_plan(settings)
    report.details.update(plan=plan.details(), rehearsed_on=scratch, passed=False)
    report.tables["plan"] = plan.rows()
    report.warnings += plan.warnings
    if plan.empty:
        report.summary = f"nothing to rehearse: {plan.describe()}"
        return
    preflight.quick(settings, [db, scratch], tools=True)
    held, snapshot = hold_snapshot(url)
    try:
        # which database was rehearsed, not only its name: apply accepts this rehearsal for that one only
        report.details["target"] = identity.identify(held, url).as_dict()
        _rehearse(settings, report, plan, held, snapshot, url, scratch_url)
    finally:
        held.close()


def _rehearse(settings: Settings, report: Report, plan: Plan, held: psycopg.Connection, snapshot: str, url: str, scratch_url: str) -> None:
    cfg = settings.config.migrate
    db, scratch = cfg.database, cfg.rehearse_on
    with report.timed("clone"):
        options, schemas, cloned = clone_into_scratch(settings, held, snapshot, url, scratch_url, report)
    with connect(scratch_url, autocommit=True, application_name="safesync-migrate-scratch") as conn:
        with report.timed("validation_before"):
            before = validation.baseline(settings, conn)
        outside_before = outside_schemas(conn, schemas)  # a schema the migration creates is compared, not here
        untouched = outside_fingerprint(conn, outside_before)
    with report.timed("migration"):
        outcome = migration.run(
            settings, plan, scratch_url, run_id=report.run_id,
            check=lambda c: validation.validate(settings, c, before),
        )  # fmt: skip
    if outcome.migrated and outcome.validation is None:
        with connect(scratch_url, autocommit=True, application_name="safesync-migrate-scratch") as conn:
            with report.timed("validation"):
                outcome.validation = validation.validate(settings, conn, before)
    describe_outcome(report, outcome)
    with connect(scratch_url, autocommit=True, application_name="safesync-migrate-scratch") as conn:
        now = outside_fingerprint(conn, [s for s in outside_before if s in user_schemas(conn)])
    outside = sorted(t for t in untouched.keys() | now.keys() if untouched.get(t) != now.get(t))
    with report.timed("compare"):
        comparison, losses, shared = _compare(held, scratch_url, schemas, cloned)
    comparison.into_report(report, db, "rehearsal")
    refused = _losses_into_report(report, losses, cfg.allow_data_loss, shared)
    unseen = [f"{m.table}.{m.column} (masked)" for m in options.masks] + [f"{t} (structure only)" for t in options.exclude_table_data]
    if unseen:  # their real values never reach the scratch: say so rather than let "no loss" cover them
        report.warnings.append(f"the data-loss check cannot see rewrites of {', '.join(unseen)}: the rehearsal has no real data there")
    changes = (
        f"{len(comparison.schema.differences)} schema change(s), {len(comparison.data.differing)} table(s) with data changes"
    )
    seconds = report.timings.get("migration_s", 0)
    if not outcome.ok:
        report.problems(f"rehearsal on {scratch} failed: {outcome.problem()}; {changes} (the target was not touched)")
    elif outside:
        report.details["changed_outside_rehearsed_schemas"] = outside
        report.problems(
            f"rehearsal on {scratch} failed: the migration changed table(s) outside the rehearsed schemas "
            f"({', '.join(schemas)}): {', '.join(outside[:5])}{' …' if len(outside) > 5 else ''} — the scratch's copies "
            "are not the target's data, so losses there cannot be checked; add their schema to [migrate] schemas "
            "(the target was not touched)"
        )
    elif refused:
        shown = first_few([f"{l.object}: {l.what}" for l in refused], "; ")
        report.problems(
            f"rehearsal on {scratch} failed: the migration deletes or overwrites existing data — {shown} "
            f"(the target was not touched; if this is intended, list the table or column in [migrate] allow_data_loss)"
        )
    else:
        report.details["passed"] = True
        report.summary = f"rehearsal on {scratch} passed: {plan.describe()} took {seconds:.1f}s; {changes}"


def _losses_into_report(
    report: Report, losses: list[loss.Loss], allowed: list[str], shared: frozenset[str] = frozenset()
) -> list[loss.Loss]:
    """The losses table, a warning for each accepted one (and for each
    unqualified entry naming tables of several schemas, which accepts none
    of them); returns the rest."""
    accepted = [l.accepted_by(allowed, shared) for l in losses]
    ambiguous = [e for e in allowed if e.split(".")[0] in shared and e.count(".") <= 1]
    if ambiguous:
        report.warnings.append(
            f"allow_data_loss {', '.join(map(repr, ambiguous))}: several schemas have a table of that name; "
            "qualify it with its schema (e.g. 'public.users') — unqualified, it accepts none of them"
        )
    report.tables["existing data lost"] = [l.row(ok) for l, ok in zip(losses, accepted, strict=True)]
    report.details["data_loss"] = {"found": len(losses), "accepted": sum(accepted), "allow_data_loss": allowed}
    report.warnings += [f"accepted by allow_data_loss: {l.object}: {l.what}" for l, ok in zip(losses, accepted, strict=True) if ok]
    return [l for l, ok in zip(losses, accepted, strict=True) if not ok]


def describe_outcome(report: Report, outcome: migration.Outcome) -> None:
    """Steps, command output and validation results into the report."""
    report.tables["steps"] = outcome.steps
    if outcome.error:
        report.details["error"] = outcome.error
        if outcome.failed_file:
            report.details["failed_file"] = outcome.failed_file
    if outcome.command is not None:
        report.details["command"] = outcome.command.details()
    if outcome.validation is not None:
        report.tables["validation"] = outcome.validation.checks
        report.tables["validation failures"] = outcome.validation.new
        if outcome.validation.preexisting:
            report.tables["already failing before the migration"] = outcome.validation.preexisting
            report.warnings.append(
                f"{len(outcome.validation.preexisting)} validation finding(s) already failed before the migration (not caused by it)"
            )


# --- the rehearsal record ------------------------------------------------------------


def rehearsed_same_database(recorded: Any, target: identity.Identity) -> bool:
    """Whether a rehearsal's recorded target (``Identity.as_dict``) is the
    database ``target`` is: same database name and OID, and the same cluster
    (system identifier when both were readable, else the same running
    server). A config's name can point at another database between runs
    (staging's URL in one CI environment, production's in the next); a
    rehearsal of staging's data proves nothing about production's."""
    if not isinstance(recorded, dict):
        return False  # a rehearsal from before targets were recorded: rehearse again
    if (recorded.get("database"), recorded.get("database_oid")) != (target.database, target.database_oid):
        return False
    if recorded.get("system_identifier") and target.system_identifier:
        return recorded["system_identifier"] == target.system_identifier
    return recorded.get("server_started") == target.started.isoformat()


def latest_passing(settings: Settings, plan: Plan, max_age_minutes: int, target: identity.Identity) -> dict[str, Any] | None:
    """The newest stored rehearsal of exactly this plan, on a clone of
    ``target`` (the database, not just its name), that passed within
    ``max_age_minutes``. Reads newest first and stops at runs started a day
    before that (a rehearsal that long would not be "fresh" anyway)."""
    oldest = utcnow() - timedelta(minutes=max_age_minutes)
    for info in reversed(runs.listing(settings, "migrate")):
        started = info.started
        if started is not None and started < oldest - timedelta(days=1):
            break  # names sort by start time: everything before is older still
        try:
            run = settings.storage.get_json(info.key)
        except Exception:  # an unreadable report is not a rehearsal
            continue
        details = run.get("details") or {}
        finished = run.get("finished_at")
        if not (run.get("action") == "rehearse" and run.get("status") == "ok" and details.get("passed") and finished):
            continue
        if (details.get("plan") or {}).get("plan_digest") != plan.digest or (details.get("plan") or {}).get("database") != plan.database:
            continue
        if datetime.fromisoformat(finished) < oldest:
            continue
        if not rehearsed_same_database(details.get("target"), target):
            continue
        return {"run_id": run.get("run_id"), "finished_at": finished, "key": info.key, "rehearsed_on": details.get("rehearsed_on")}
    return None

