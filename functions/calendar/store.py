"""Writing ``calendar.events`` rows from Google's side of the sync.

Every write here runs on the sync's own connection, where the session
setting ``safesync.sync_writer = on`` tells the local-edit trigger that this
is the sync (not the app) changing a row. Writes are collected per page and
sent with ``executemany`` (pipelined by psycopg), inside the caller's
transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .context import SyncContext
from .mapping import EventData, field_hashes, content_hash, google_meta, row_values

CONTENT_COLUMNS = (
    "title", "description", "location", "all_day", "start_at", "end_at", "start_date", "end_date",
    "time_zone", "end_time_zone", "recurrence", "event_status", "attendees", "meeting_id", "conference_data",
)
META_COLUMNS = (
    "google_event_id", "google_ical_uid", "recurring_event_id", "original_start", "etag", "sequence",
    "source_created_at", "source_updated_at",
)


def rows_by_google_id(conn: psycopg.Connection, calendar_id: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = list(dict.fromkeys(ids))
    if not ids:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select * from calendar.events where calendar_id = %s and google_event_id = any(%s)", [calendar_id, ids]
        )
        return {r["google_event_id"]: r for r in cur.fetchall()}


def unpushed_instances(conn: psycopg.Connection, calendar_id: str, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """Local exceptions not yet given a Google id, by (series id, original start)."""
    if not keys:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            select * from calendar.events
             where calendar_id = %s and google_event_id is null
               and (recurring_event_id, original_start) in (select * from unnest(%s::text[], %s::text[]))
            """,
            [calendar_id, [k[0] for k in keys], [k[1] for k in keys]],
        )
        return {(r["recurring_event_id"], r["original_start"]): r for r in cur.fetchall()}


# Inside a window, a row is a candidate only if it lies inside the window's
# inner part (a day off each edge: Google and we may draw the edge a little
# differently) and, for a series, starts in it (an older series may simply
# have no occurrence left in the window).
_IN_WINDOW = sql.SQL("""
    and ((not all_day and start_at < %(end)s and end_at > %(start)s and (recurrence is null or start_at >= %(start)s))
      or (all_day and start_date < %(end)s::date and end_date > %(start)s::date
          and (recurrence is null or start_date >= %(start)s::date)))""")


def absent_candidates(
    conn: psycopg.Connection, calendar_id: str, listed: list[str], window: tuple[datetime, datetime] | None
) -> list[dict[str, Any]]:
    """Synced Google rows a listing did not return: within ``window`` for a
    windowed listing, any time (None) for an unbounded one. Candidates to
    check by id, never deletions by themselves."""
    query = sql.SQL("""
        select * from calendar.events
         where calendar_id = %(cal)s and source = 'google_calendar' and sync_status = 'synced'
           and not deleted and google_event_id is not null and event_status <> 'cancelled'
           and not (google_event_id = any(%(listed)s)){}
    """).format(_IN_WINDOW if window is not None else sql.SQL(""))
    params: dict[str, Any] = {"cal": calendar_id, "listed": listed}
    if window is not None:
        params.update(start=window[0] + timedelta(days=1), end=window[1] - timedelta(days=1))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def synced_values(ctx: SyncContext, data: EventData, ev: dict[str, Any]) -> dict[str, Any]:
    """All columns of a row that now equals Google's event."""
    hashes = field_hashes(data)
    return {
        **row_values(data, ctx.cipher),
        **google_meta(ev),
        "synced_hash": content_hash(hashes),
        "synced_field_hashes": Jsonb(hashes),
    }


_SET_SYNCED = ", ".join(f"{c} = %({c})s" for c in CONTENT_COLUMNS + META_COLUMNS) + """,
    synced_hash = %(synced_hash)s, synced_field_hashes = %(synced_field_hashes)s,
    sync_status = 'synced', sync_error = null, sync_retries = 0, last_sync_at = now(),
    deleted = false, deleted_at = null, updated_at = now()"""

INSERT_SQL = (
    "insert into calendar.events (calendar_id, source, sync_status, last_sync_at, synced_hash, synced_field_hashes, "
    + ", ".join(CONTENT_COLUMNS + META_COLUMNS)
    + ") values (%(calendar_id)s, 'google_calendar', 'synced', now(), %(synced_hash)s, %(synced_field_hashes)s, "
    + ", ".join(f"%({c})s" for c in CONTENT_COLUMNS + META_COLUMNS)
    + ")"
)
UPDATE_SYNCED_SQL = f"update calendar.events set {_SET_SYNCED} where id = %(id)s"
# After a push: only when the row was not edited again meanwhile.
UPDATE_PUSHED_SQL = f"update calendar.events set {_SET_SYNCED} where id = %(id)s and local_updated_at = %(seen_local)s"
# Edited again meanwhile: keep the newer local content, adopt Google's etag and base.
UPDATE_BASE_SQL = """
    update calendar.events
       set google_event_id = %(google_event_id)s, google_ical_uid = %(google_ical_uid)s, etag = %(etag)s,
           sequence = %(sequence)s, source_created_at = %(source_created_at)s, source_updated_at = %(source_updated_at)s,
           synced_hash = %(synced_hash)s, synced_field_hashes = %(synced_field_hashes)s, last_sync_at = now(),
           updated_at = now()
     where id = %(id)s
"""
# A merge whose result differs from Google: local content = merge, base = Google, push pending.
UPDATE_MERGED_SQL = (
    "update calendar.events set "
    + ", ".join(f"{c} = %({c})s" for c in CONTENT_COLUMNS + META_COLUMNS)
    + """, synced_hash = %(synced_hash)s, synced_field_hashes = %(synced_field_hashes)s,
       sync_status = 'pending_sync', sync_error = null, sync_retries = 0, last_sync_at = now(),
       local_updated_at = clock_timestamp(), updated_at = now()
     where id = %(id)s"""
)
DELETE_SQL = """
    update calendar.events
       set deleted = true, deleted_at = coalesce(deleted_at, now()), sync_status = 'synced', sync_error = null,
           sync_retries = 0, etag = coalesce(%(etag)s, etag), last_sync_at = now(), updated_at = now()
     where id = %(id)s
"""
DELETE_EXCEPTIONS_SQL = """
    with old as (
        select id, sync_status from calendar.events
         where calendar_id = %(calendar_id)s and recurring_event_id = %(master)s and not deleted
           and sync_status <> 'local_only'  -- out of the sync: never changed by it
           for update)
    update calendar.events e
       set deleted = true, deleted_at = coalesce(deleted_at, now()), sync_status = 'synced', sync_error = null,
           last_sync_at = now(), updated_at = now()
      from old
     where e.id = old.id
    returning e.id, e.google_event_id, old.sync_status
"""


def delete_exceptions(conn: psycopg.Connection, calendar_id: str, master: str) -> tuple[int, list[tuple[Any, str | None]]]:
    """Delete the occurrences of a series that is gone; returns how many, and
    (row id, Google id) of those that held a change not on Google yet (an
    app-made or app-edited occurrence): the series' deletion wins over them,
    and the caller must say so — before, they vanished without a word."""
    found = conn.execute(DELETE_EXCEPTIONS_SQL, {"calendar_id": calendar_id, "master": master}).fetchall()
    return len(found), [(r[0], r[1]) for r in found if r[2] in ("pending_sync", "sync_failed")]


def execute_unless_edited(conn: psycopg.Connection, sql: str, params: list[dict[str, Any]]) -> set[Any]:
    """Run a per-row write (``sql`` ends in ``where id = %(id)s``) only on
    rows the app has not edited since they were read: each param carries the
    ``seen_local`` (``local_updated_at``) it was planned from. The sync plans
    from rows read before its Google calls and writes later; without this
    check an app edit made in between was overwritten and marked synced —
    lost without a trace. Returns the ids written; a skipped row keeps the
    app's content and stays pending, so its push meets Google's newer etag
    (412) and merges three-way."""
    if not params:
        return set()
    written: set[Any] = set()
    with conn.cursor() as cur:
        cur.executemany(sql + " and local_updated_at = %(seen_local)s returning id", params, returning=True)
        while True:
            for (row_id,) in cur.fetchall():
                written.add(row_id)
            if not cur.nextset():
                break
    return written


def executemany(conn: psycopg.Connection, sql: str, params: list[dict[str, Any]]) -> None:
    if params:
        with conn.cursor() as cur:
            cur.executemany(sql, params)
