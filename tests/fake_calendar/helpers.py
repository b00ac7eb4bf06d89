"""Small helpers for calendar tests: event bodies, and the app's side of the
``calendar.events`` table (plain SQL, as the app would write it)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def timed(start: datetime, hours: float = 1, tz: str | None = None) -> dict[str, dict[str, str]]:
    zone = ZoneInfo(tz) if tz else timezone.utc
    s, e = start.astimezone(zone), (start + timedelta(hours=hours)).astimezone(zone)
    extra = {"timeZone": tz} if tz else {}
    return {"start": {"dateTime": s.isoformat(), **extra}, "end": {"dateTime": e.isoformat(), **extra}}


def all_day(day: date, days: int = 1, tz: str | None = None) -> dict[str, dict[str, str]]:
    extra = {"timeZone": tz} if tz else {}
    return {"start": {"date": day.isoformat(), **extra}, "end": {"date": (day + timedelta(days=days)).isoformat(), **extra}}


def event(event_id: str, title: str, start: datetime, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "summary": title, **timed(start), **extra}


def gid(n: int, prefix: str = "e") -> str:
    """A valid Google id (base32hex) for test event n."""
    return f"{prefix}{n:07d}"


def connect(settings) -> psycopg.Connection:
    return psycopg.connect(settings.database_url("prod"), autocommit=True, row_factory=dict_row)


def rows(settings, *, include_deleted: bool = True) -> dict[str, dict[str, Any]]:
    with connect(settings) as conn:
        found = conn.execute(
            "select * from calendar.events where google_event_id is not null" + ("" if include_deleted else " and not deleted")
        ).fetchall()
    return {r["google_event_id"]: r for r in found}


def app_insert(settings, *, title: str, start: datetime | None = None, hours: float = 1, day: date | None = None,
               days: int = 1, status: str = "pending_sync", tz: str | None = None, **extra: Any) -> str:
    """An event created in the app; returns its row id."""
    cols: dict[str, Any] = {"calendar_id": "primary", "title": title, "sync_status": status, "source": "manual", "time_zone": tz}
    if day is not None:
        cols.update(all_day=True, start_date=day, end_date=day + timedelta(days=days))
    else:
        cols.update(all_day=False, start_at=start, end_at=start + timedelta(hours=hours))
    cols.update(extra)
    if "attendees" in cols:
        cols["attendees"] = Jsonb(cols["attendees"])
    names = ", ".join(cols)
    marks = ", ".join(f"%({k})s" for k in cols)
    with connect(settings) as conn:
        return str(conn.execute(f"insert into calendar.events ({names}) values ({marks}) returning id", cols).fetchone()["id"])


def app_update(settings, google_event_id: str, **changes: Any) -> None:
    """An edit made in the app (the trigger marks the row pending_sync)."""
    sets = ", ".join(f"{k} = %({k})s" for k in changes)
    with connect(settings) as conn:
        n = conn.execute(f"update calendar.events set {sets} where google_event_id = %(gid)s", {**changes, "gid": google_event_id}).rowcount
    assert n == 1, f"no row for {google_event_id}"


def audit(settings, kind: str | None = None) -> list[dict[str, Any]]:
    with connect(settings) as conn:
        if kind:
            return conn.execute("select * from calendar.audit_log where kind = %s order by id", [kind]).fetchall()
        return conn.execute("select * from calendar.audit_log order by id").fetchall()


def qstash_delivery(message: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a published message as QStash delivers it to its
    destination (signed for that URL with the current signing key)."""
    import os

    from tests.qstash_signer import qstash_headers

    body = message["body"].encode()
    return body, qstash_headers(os.environ["QSTASH_CURRENT_SIGNING_KEY"], message["destination"], body, message_id=message["messageId"])
