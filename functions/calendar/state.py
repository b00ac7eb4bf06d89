"""Per-calendar sync state (token, last run per mode) and the audit log.

The audit log records every attempt, error, state change and conflict with
the run id, so "what happened to this event" has an answer after the fact.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def _jsonable(detail: dict[str, Any] | None) -> Jsonb:
    return Jsonb(json.loads(json.dumps(detail or {}, default=str)))


def audit(
    conn: psycopg.Connection,
    run_id: str | None,
    kind: str,
    action: str,
    *,
    calendar_id: str | None = None,
    event_id: Any = None,
    google_event_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        """
        insert into calendar.audit_log (run_id, calendar_id, event_id, google_event_id, kind, action, detail)
        values (%s, %s, %s, %s, %s, %s, %s)
        """,
        [run_id, calendar_id, event_id, google_event_id, kind, action, _jsonable(detail)],
    )


def sync_token(conn: psycopg.Connection, calendar_id: str) -> str | None:
    row = conn.execute("select sync_token from calendar.sync_state where calendar_id = %s", [calendar_id]).fetchone()
    return row[0] if row else None


def store_token(conn: psycopg.Connection, calendar_id: str, token: str | None) -> None:
    """Called inside the transaction of the last page it belongs to."""
    conn.execute(
        """
        insert into calendar.sync_state (calendar_id, sync_token, token_updated_at, updated_at)
        values (%s, %s, now(), now())
        on conflict (calendar_id) do update
            set sync_token = excluded.sync_token, token_updated_at = now(), updated_at = now()
        """,
        [calendar_id, token],
    )


def skipped_events(conn: psycopg.Connection, calendar_id: str) -> list[str]:
    """Google event ids skipped as malformed by an earlier run, not yet
    read nor gone (to be fetched by id: no change listing returns them)."""
    rows = conn.execute(
        "select google_event_id from calendar.skipped_events where calendar_id = %s order by google_event_id", [calendar_id]
    ).fetchall()
    return [r[0] for r in rows]


def settle_skipped(conn: psycopg.Connection, calendar_id: str, skipped: dict[str, str], settled: set[str]) -> None:
    """In the transaction that stores the sync token: ``skipped`` (id →
    error) are remembered, ``settled`` (read, or gone, this run) forgotten."""
    conn.execute(
        "delete from calendar.skipped_events where calendar_id = %s and google_event_id = any(%s)",
        [calendar_id, sorted(settled - skipped.keys())],
    )
    for event_id, error in sorted(skipped.items()):
        conn.execute(
            """insert into calendar.skipped_events (calendar_id, google_event_id, error) values (%s, %s, %s)
               on conflict (calendar_id, google_event_id) do update set error = excluded.error, last_skipped_at = now()""",
            [calendar_id, event_id, error],
        )


def calendar_time_zone(conn: psycopg.Connection, calendar_id: str) -> str | None:
    row = conn.execute("select time_zone from calendar.sync_state where calendar_id = %s", [calendar_id]).fetchone()
    return row[0] if row else None


def store_time_zone(conn: psycopg.Connection, calendar_id: str, zone: str) -> None:
    conn.execute(
        """insert into calendar.sync_state (calendar_id, time_zone) values (%s, %s)
           on conflict (calendar_id) do update set time_zone = excluded.time_zone
           where calendar.sync_state.time_zone is distinct from excluded.time_zone""",
        [calendar_id, zone],
    )


def begin_listing(conn: psycopg.Connection, calendar_id: str) -> datetime:
    """A token listing starts: it will see every change notified so far, so
    a queued notification sync is consumed (a notification from now on
    queues a new one). Returns the start, for ``clear_notify_pending``."""
    conn.execute("update calendar.sync_state set notify_queued_at = null where calendar_id = %s", [calendar_id])
    return conn.execute("select clock_timestamp()").fetchone()[0]


def clear_notify_pending(conn: psycopg.Connection, calendar_id: str, listed_from: datetime) -> None:
    """Notifications received before the listing began are synced."""
    conn.execute(
        """update calendar.sync_state set notify_pending_since = null
            where calendar_id = %s and (notify_last_at is null or notify_last_at < %s)""",
        [calendar_id, listed_from],
    )


def record_attempt(conn: psycopg.Connection, calendar_id: str, mode: str, run_id: str) -> None:
    conn.execute(
        """
        insert into calendar.sync_runs (calendar_id, mode, last_attempt_at, last_run_id, last_status)
        values (%s, %s, now(), %s, 'running')
        on conflict (calendar_id, mode) do update
            set last_attempt_at = now(), last_run_id = excluded.last_run_id, last_status = 'running'
        """,
        [calendar_id, mode, run_id],
    )


def record_result(
    conn: psycopg.Connection, calendar_id: str, mode: str, run_id: str, status: str, counts: dict[str, Any], error: str | None = None
) -> None:
    ok = status == "ok"
    conn.execute(
        """
        update calendar.sync_runs
           set last_status = %(status)s, last_error = %(error)s, last_counts = %(counts)s, last_run_id = %(run)s,
               last_success_at = case when %(ok)s then now() else last_success_at end,
               consecutive_failures = case when %(ok)s then 0 else consecutive_failures + 1 end
         where calendar_id = %(cal)s and mode = %(mode)s
        """,
        {"status": status, "error": error, "counts": _jsonable(counts), "run": run_id, "ok": ok, "cal": calendar_id, "mode": mode},
    )
    audit(conn, run_id, "run", f"{mode} {status}", calendar_id=calendar_id, detail={"counts": counts, "error": error})
