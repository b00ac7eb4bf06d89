"""One sync run over the configured calendars: pull (incremental, full or
cleanup), then push pending local changes.

The runner lock (job ``calendar`` on the calendar database) makes a second
concurrent run answer 409; inside, a per-calendar advisory lock keeps any
other path (a notification-triggered run in another process using another
lock key, a CLI run against a differently named config) from interleaving
with this one on the same calendar.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

import psycopg

from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.delivery import Delivery
from safesync.shared.errors import AlreadyRunning, BadRequest, DatabaseError, JobFailed, Refused, SafesyncError
from safesync.shared.log import redact
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from . import reads, state
from .cleanup import Cleanup
from .context import SyncContext
from .crypto import Cipher
from .google import CalendarClient
from .pull import Puller
from .push import Pusher
from .retry import RetryPolicy
from .schema import migrate, tables_required

MODES = ("incremental", "full", "cleanup")
JOB = "calendar"


def make_policy(settings: Settings) -> RetryPolicy:
    cfg = settings.config.calendar
    return RetryPolicy(attempts=cfg.retry_attempts, base_delay=cfg.retry_base_delay_s, max_delay=cfg.retry_max_delay_s)


@contextmanager
def sync_connection(settings: Settings) -> Iterator[psycopg.Connection]:
    """Autocommit connection (explicit transactions per page) marked as the
    sync writer so the local-edit trigger ignores the sync's own writes; the
    tables are migrated first, and their loss mid-run is a readable 503."""
    database = settings.config.calendar.database
    url = settings.database_url(database)
    with connect(url, autocommit=True, application_name="safesync-calendar") as conn, tables_required(url, database):
        conn.execute("set safesync.sync_writer = 'on'")
        migrate(conn)
        yield conn


@contextmanager
def calendar_lock(conn: psycopg.Connection, calendar_id: str) -> Iterator[None]:
    key = f"safesync:calendar-sync:{calendar_id}"
    if not conn.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))", [key]).fetchone()[0]:
        raise AlreadyRunning(f"calendar {calendar_id} is being synced by another run", {"calendar_id": calendar_id})
    try:
        yield
    finally:
        conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", [key])


def selected_calendars(settings: Settings, calendar_id: str | None) -> list[str]:
    configured = settings.config.calendar.calendar_ids
    if calendar_id is None:
        return list(configured)
    if calendar_id not in configured:
        raise BadRequest(f"calendar_id {calendar_id!r} is not one of calendar.calendar_ids")
    return [calendar_id]


def sync_calendars(
    settings: Settings, report: Report, mode: str, *, force: bool = False, calendar_id: str | None = None,
    reset_failed: bool = False, resync: bool = False,
) -> None:
    """The job body: every selected calendar, one after the other. A failed
    calendar does not stop the others; the run then fails (503) or is
    refused (422) naming it."""
    if mode not in MODES:
        raise BadRequest(f"mode must be one of {', '.join(MODES)}")
    cfg = settings.config.calendar
    calendars = selected_calendars(settings, calendar_id)
    cipher = Cipher.from_env(settings.env)
    client = CalendarClient(settings.env, timeout=cfg.http_timeout_s, scopes=cfg.scopes)
    policy = make_policy(settings)
    rows: list[dict[str, Any]] = []
    errors: list[SafesyncError] = []
    totals: dict[str, int] = {}
    with sync_connection(settings) as conn:
        for cal in calendars:
            before = dict(client.calls)
            ctx = SyncContext(cfg, conn, client, cipher, policy, report.run_id, datetime.now(timezone.utc), force=force)
            outcome, error = "ok", None
            with calendar_lock(conn, cal):
                state.record_attempt(conn, cal, mode, report.run_id)
                if reset_failed:
                    reset_failed_rows(conn, cal, report.run_id)
                try:
                    with report.timed(f"{cal}"):
                        how = run_calendar(ctx, cal, mode, resync=resync)
                except (Refused, JobFailed) as exc:
                    outcome, error, how = ("refused" if isinstance(exc, Refused) else "failed"), exc.message, mode
                    errors.append(exc)
                except psycopg.OperationalError as exc:  # the database went away mid-run
                    raise DatabaseError(f"calendar {cal}: database error: {redact(str(exc)).strip()}") from None
                finally:
                    reads.invalidate(cfg.database, ctx.spans)
                calls = {k: v - before.get(k, 0) for k, v in client.calls.items() if v - before.get(k, 0)}
                state.record_result(conn, cal, mode, report.run_id, outcome, {**ctx.detail(), "api_calls": calls}, error)
                if mode != "full" and how.startswith("full") and outcome == "ok":  # an incremental that fell back to full
                    state.record_attempt(conn, cal, "full", report.run_id)
                    state.record_result(conn, cal, "full", report.run_id, outcome, {**ctx.detail(), "api_calls": calls})
            report.warnings.extend(ctx.warnings)
            for key, value in ctx.counts.items():
                totals[key] = totals.get(key, 0) + value
            rows.append({"calendar": cal, "mode": how, "result": outcome, **_row_counts(ctx.counts), "api_calls": calls, "error": error})
    report.tables["calendars"] = rows
    report.details.update(counts=totals, api_calls=dict(client.calls))
    if errors:
        message = "; ".join(e.message for e in errors)
        if any(isinstance(e, Refused) for e in errors):
            raise Refused(message, {"calendars": rows})
        raise JobFailed(message, {"calendars": rows})
    report.summary = (
        f"{mode}: {len(calendars)} calendar(s); {totals.get('inserted', 0)} new, {totals.get('updated', 0)} updated, "
        f"{totals.get('merged', 0)} merged, {totals.get('deleted', 0)} deleted, {totals.get('pushed', 0)} pushed, "
        f"{totals.get('conflicts', 0)} conflict(s)"
    )
    # Local changes that did not reach Google (some now sync_failed), Google
    # events skipped as unreadable, or Google changes not applied to a
    # malformed row are not "done and healthy": ok is false (HTTP 200,
    # exit 1), not a warning under ok: true.
    problems = []
    if totals.get("push_failed"):
        report.warnings.append(f"{totals['push_failed']} row(s) failed to push this run (see calendar status)")
        problems.append(f"{totals['push_failed']} row(s) failed to push")
    if totals.get("malformed_remote"):
        problems.append(f"{totals['malformed_remote']} malformed Google event(s) skipped (see warnings)")
    if totals.get("malformed_local"):
        problems.append(f"{totals['malformed_local']} Google change(s) not applied to malformed row(s) (see warnings)")
    if problems:
        report.problems("; ".join([report.summary, *problems]))


def reset_failed_rows(conn: psycopg.Connection, calendar_id: str, run_id: str) -> int:
    """Admin "retry all": failed rows get a fresh set of tries."""
    with conn.transaction():
        count = conn.execute(
            """update calendar.events set sync_status = 'pending_sync', sync_retries = 0, updated_at = now()
                where calendar_id = %s and sync_status = 'sync_failed'""",
            [calendar_id],
        ).rowcount
        state.audit(conn, run_id, "state", "retry all: sync_failed rows reset to pending_sync", calendar_id=calendar_id, detail={"rows": count})
    return count


def _row_counts(counts) -> dict[str, int]:
    keys = ("listed", "inserted", "updated", "merged", "deleted", "pushed", "conflicts", "push_failed")
    return {k: counts.get(k, 0) for k in keys}


def run_calendar(ctx: SyncContext, calendar_id: str, mode: str, *, resync: bool = False) -> str:
    puller = Puller(ctx, calendar_id)
    if resync:
        how = puller.resync("admin resync")
    elif mode == "incremental":
        how = puller.incremental()
    elif mode == "full":
        how = puller.full()
    else:
        cleanup = Cleanup(ctx, calendar_id)
        cleanup.reconcile()
        cleanup.drop_obsolete()
        how = "cleanup"
    Pusher(ctx, calendar_id).run(include_failed=mode == "cleanup")
    return how


def run_sync(
    settings: Settings,
    mode: str,
    *,
    trigger: dict[str, Any] | None = None,
    delivery: Delivery | None = None,
    force: bool = False,
    calendar_id: str | None = None,
    action: str | None = None,
    reset_failed: bool = False,
    resync: bool = False,
) -> Answer:
    """A sync under the runner: lock per job and database (409 when busy),
    QStash de-duplication, run report stored under ``runs/calendar/``."""
    selected_calendars(settings, calendar_id)  # an unknown calendar is a usage error, not a run
    report = Report(JOB, action or mode, trigger=trigger or {"via": "cli"})
    return execute(
        settings,
        report,
        lambda r: sync_calendars(settings, r, mode, force=force, calendar_id=calendar_id, reset_failed=reset_failed, resync=resync),
        target=settings.config.calendar.database,
        delivery=delivery,
    )
