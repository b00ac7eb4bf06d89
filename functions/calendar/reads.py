"""The events read API: a window of events with ETag / 304 and a 5-minute
in-process cache.

A cached window is dropped as soon as a sync in this process changes an
event overlapping it (old or new time), so a reader never waits five minutes
for a change this instance made. Other instances (or a CLI sync) are not
seen: their readers get at most five-minute-old data, which is what
``Cache-Control: max-age=300`` already promises.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta, timezone
from typing import Any, Iterable

from psycopg.rows import dict_row

from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.errors import BadRequest

from .crypto import Cipher, UnreadableConference
from .mapping import utc_text
from .schema import ensure_migrated, tables_required

TTL_S = 300
CACHE_CONTROL = f"private, max-age={TTL_S}"
MAX_ENTRIES = 256


@dataclass
class Entry:
    database: str
    start: datetime
    end: datetime
    etag: str
    body: dict[str, Any]
    stored: float


_cache: dict[tuple, Entry] = {}
_lock = threading.Lock()


def parse_bound(text: str | None, name: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an RFC 3339 instant with offset,
    in years 2..9998: the window's day arithmetic (a day added for all-day
    events, the shift to UTC) must not overflow Python's dates — year 1 or
    9999 bounds answered 500."""
    if not text:
        raise BadRequest(f"{name}: required (YYYY-MM-DD or RFC 3339)")
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), dtime.min, timezone.utc)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: {text!r} is not a date (YYYY-MM-DD) or RFC 3339 instant") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name}: {text!r} needs a UTC offset (e.g. Z)")
    if not 2 <= moment.year <= 9998:
        raise BadRequest(f"{name}: {text!r} is out of range (years 2 to 9998)")
    return moment.astimezone(timezone.utc)


def check_window(settings: Settings, start_text: str | None, end_text: str | None) -> tuple[datetime, datetime]:
    start, end = parse_bound(start_text, "from"), parse_bound(end_text, "to")
    if end <= start:
        raise BadRequest("to: must be after from")
    if end - start > timedelta(days=settings.config.calendar.events_max_days):
        raise BadRequest(f"to: window longer than {settings.config.calendar.events_max_days} days")
    return start, end


def invalidate(database: str, spans: Iterable[tuple[str, datetime, datetime]]) -> int:
    """Drop cached windows overlapping any changed span; returns how many."""
    spans = list(spans)
    if not spans:
        return 0
    with _lock:
        stale = [k for k, e in _cache.items() if e.database == database and any(s < e.end and t > e.start for _, s, t in spans)]
        for key in stale:
            del _cache[key]
    return len(stale)


def clear() -> None:
    with _lock:
        _cache.clear()


def _event(row: dict[str, Any], cipher: Cipher) -> dict[str, Any]:
    """One event of the answer. Conference data that does not decrypt is
    that event's ``conference_error`` (conference null); it used to fail the
    whole read (503) without naming the event."""
    all_day = row["all_day"]
    try:
        conference, problem = cipher.decrypt(row["conference_data"]), None
    except UnreadableConference as exc:
        conference, problem = None, exc.message
    return {
        "id": str(row["id"]),
        "calendar_id": row["calendar_id"],
        "google_event_id": row["google_event_id"],
        "title": row["title"],
        "description": row["description"],
        "location": row["location"],
        "all_day": all_day,
        "start": row["start_date"].isoformat() if all_day else utc_text(row["start_at"]),
        "end": row["end_date"].isoformat() if all_day else utc_text(row["end_at"]),
        "time_zone": row["time_zone"],
        "end_time_zone": row["end_time_zone"],
        "status": row["event_status"],
        "attendees": row["attendees"],
        "recurrence": row["recurrence"],
        "recurring_event_id": row["recurring_event_id"],
        "original_start": row["original_start"],
        "meeting_id": row["meeting_id"],
        "conference": conference,
        **({"conference_error": problem} if problem else {}),
        "sync_status": row["sync_status"],
    }


def _query(settings: Settings, start: datetime, end: datetime) -> list[dict[str, Any]]:
    cfg = settings.config.calendar
    url = settings.database_url(cfg.database)
    # All-day events are floating dates: compare them with the dates of the bounds.
    start_day = start.date()
    end_day = end.date() if end.time() == dtime.min else end.date() + timedelta(days=1)
    with connect(url, autocommit=True, application_name="safesync-calendar-read") as conn, tables_required(url, cfg.database):
        ensure_migrated(conn, url)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                """
                select * from calendar.events
                 where calendar_id = any(%(cals)s) and not deleted
                   and ((not all_day and start_at < %(end)s and (end_at > %(start)s or recurrence is not null))
                     or (all_day and start_date < %(end_day)s and (end_date > %(start_day)s or recurrence is not null)))
                 order by coalesce(start_at, start_date::timestamptz), id
                """,
                {"cals": list(cfg.calendar_ids), "start": start, "end": end, "start_day": start_day, "end_day": end_day},
            )
            return cur.fetchall()


def read_events(settings: Settings, start: datetime, end: datetime) -> tuple[str, dict[str, Any], bool]:
    """(etag, body, served from cache) for the window [start, end)."""
    cfg = settings.config.calendar
    key = (cfg.database, tuple(cfg.calendar_ids), start, end)
    now = time.monotonic()
    with _lock:
        entry = _cache.get(key)
        if entry is not None and now - entry.stored < TTL_S:
            return entry.etag, entry.body, True
    cipher = Cipher.from_env(settings.env)
    events = [_event(r, cipher) for r in _query(settings, start, end)]
    body = {"from": utc_text(start), "to": utc_text(end), "count": len(events), "events": events}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]
    etag = f'"{digest}"'
    with _lock:
        if len(_cache) >= MAX_ENTRIES:
            _cache.pop(min(_cache, key=lambda k: _cache[k].stored))
        _cache[key] = Entry(cfg.database, start, end, etag, body, now)
    return etag, body, False


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or any(c.removeprefix("W/") == etag for c in candidates)
