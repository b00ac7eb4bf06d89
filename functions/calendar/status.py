"""Calendar health at a glance, for ``safesync calendar status`` and the
lead's ``status`` target (``calendar_status(settings) -> dict``).

Health rules (first match wins):

- ``failing``: the database or the calendar tables are unavailable; a
  calendar's incremental sync failed 3 times in a row; or has not succeeded
  for ``3 h`` (it runs hourly) although it ran before;
- ``degraded``: rows in ``sync_failed``; the last run of some mode did not
  succeed; no successful full sync in 48 h (daily) or ever; rows pending
  for over 2 h (pushes are not getting through); the last run of some mode
  skipped malformed Google events or left Google changes unapplied; a calendar that has had a
  push channel has none left, or its newest expires within
  ``channel_renew_hours`` (the watch schedule is not renewing it: Google
  would stop notifying silently); a notification unsynced for over 2 h;
- ``ok`` otherwise.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from psycopg.rows import dict_row

from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.errors import SafesyncError
from safesync.shared.log import redact

from .schema import MISSING, installed

INCREMENTAL_STALE = timedelta(hours=3)
FULL_STALE = timedelta(hours=48)
PENDING_STALE = timedelta(hours=2)
FAILING_STREAK = 3
# Run counts of Google changes a run could not apply: the run finished, but
# the calendar is not in sync (a full run meets them again while in its window).
SKIPPED = {
    "malformed_remote": "skipped {n} malformed Google event(s)",
    "malformed_local": "left {n} Google change(s) unapplied to malformed row(s)",
}
NOT_INSTALLED = "calendar tables not installed: run `safesync calendar sync --mode full`"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def calendar_status(settings: Settings) -> dict[str, Any]:
    cfg = settings.config.calendar
    base: dict[str, Any] = {"database": cfg.database, "calendars": [], "pending": 0, "failed": [], "conflicts_this_week": 0}
    try:
        url = settings.database_url(cfg.database)
        with connect(url, autocommit=True, application_name="safesync-calendar-status") as conn:
            if not installed(conn):
                return {**base, "health": "failing", "reason": NOT_INSTALLED}
            return {**base, **_gather(conn, cfg.calendar_ids, timedelta(hours=cfg.channel_renew_hours))}
    except MISSING:  # dropped while we looked
        return {**base, "health": "failing", "reason": NOT_INSTALLED}
    except SafesyncError as exc:
        return {**base, "health": "failing", "reason": redact(exc.message)}


def _channels(conn, calendar_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per calendar that ever had a push channel: the newest active one."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """select calendar_id,
                      max(expiration) filter (where stopped_at is null and expiration > now()) as expires_at,
                      (array_agg(address order by expiration desc nulls last) filter (where stopped_at is null and expiration > now()))[1] as address
                 from calendar.channels where calendar_id = any(%s) group by calendar_id""",
            [calendar_ids],
        )
        return {r["calendar_id"]: r for r in cur.fetchall()}


def _gather(conn, calendar_ids: list[str], renew_margin: timedelta) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select * from calendar.sync_runs where calendar_id = any(%s) order by calendar_id, mode", [calendar_ids]
        )
        runs = cur.fetchall()
        cur.execute(
            """select count(*) as pending, min(local_updated_at) as oldest from calendar.events
                where calendar_id = any(%s) and sync_status = 'pending_sync'""",
            [calendar_ids],
        )
        pending = cur.fetchone()
        cur.execute(
            """select id, calendar_id, google_event_id, title, sync_error, sync_retries from calendar.events
                where calendar_id = any(%s) and sync_status = 'sync_failed' order by updated_at desc limit 50""",
            [calendar_ids],
        )
        failed = cur.fetchall()
        failed_total = conn.execute(
            "select count(*) from calendar.events where calendar_id = any(%s) and sync_status = 'sync_failed'", [calendar_ids]
        ).fetchone()[0]
        conflicts = conn.execute(
            "select count(*) from calendar.audit_log where kind = 'conflict' and at > now() - interval '7 days' and calendar_id = any(%s)",
            [calendar_ids],
        ).fetchone()[0]
        channels = conn.execute(
            "select count(*) from calendar.channels where stopped_at is null and expiration > now() and calendar_id = any(%s)",
            [calendar_ids],
        ).fetchone()[0]
        cur.execute(
            "select calendar_id, notify_pending_since from calendar.sync_state where calendar_id = any(%s) and notify_pending_since is not null",
            [calendar_ids],
        )
        notified = {r["calendar_id"]: r["notify_pending_since"] for r in cur.fetchall()}
    push = _channels(conn, calendar_ids)
    by_key = {(r["calendar_id"], r["mode"]): r for r in runs}
    failing: list[str] = []
    degraded: list[str] = []
    for cal in calendar_ids:
        inc, full = by_key.get((cal, "incremental")), by_key.get((cal, "full"))
        if inc and inc["consecutive_failures"] >= FAILING_STREAK:
            failing.append(f"{cal}: incremental failed {inc['consecutive_failures']} times in a row ({inc['last_error']})")
        elif inc and inc["last_success_at"] and now - inc["last_success_at"] > INCREMENTAL_STALE:
            failing.append(f"{cal}: no successful incremental sync since {inc['last_success_at']:%Y-%m-%d %H:%M}Z")
        full_success = full["last_success_at"] if full else None
        if full_success is None:
            degraded.append(f"{cal}: no successful full sync yet")
        elif now - full_success > FULL_STALE:
            degraded.append(f"{cal}: last successful full sync {full_success:%Y-%m-%d %H:%M}Z")
        for r in runs:
            if r["calendar_id"] == cal and r["last_status"] in ("failed", "refused"):
                degraded.append(f"{cal}: last {r['mode']} run {r['last_status']}: {r['last_error']}")
            counts = (r["last_counts"] or {}) if r["calendar_id"] == cal else {}
            for key, what in SKIPPED.items():
                if counts.get(key):
                    degraded.append(f"{cal}: last {r['mode']} run {what.format(n=counts[key])} (see its report's warnings)")
        channel = push.get(cal)
        if channel is not None and channel["expires_at"] is None:
            degraded.append(f"{cal}: no active push channel (expired or stopped): run the watch action")
        elif channel is not None and channel["expires_at"] - now < renew_margin:
            degraded.append(f"{cal}: push channel expires {channel['expires_at']:%Y-%m-%d %H:%M}Z, within the renewal margin: "
                            "the watch schedule is not renewing it")
        if cal in notified and now - notified[cal] > PENDING_STALE:
            degraded.append(f"{cal}: change notified at {notified[cal]:%Y-%m-%d %H:%M}Z not synced yet")
    if failed_total:
        degraded.append(f"{failed_total} event(s) failed to sync")
    if pending["pending"] and pending["oldest"] and now - pending["oldest"] > PENDING_STALE:
        degraded.append(f"{pending['pending']} pending event(s), oldest from {pending['oldest']:%Y-%m-%d %H:%M}Z")
    health, reasons = ("failing", failing) if failing else (("degraded", degraded) if degraded else ("ok", []))
    return {
        "health": health,
        "reason": "; ".join(reasons) if reasons else "all calendars synced on schedule",
        "calendars": [
            {
                "calendar_id": r["calendar_id"],
                "mode": r["mode"],
                "last_success_at": _iso(r["last_success_at"]),
                "last_attempt_at": _iso(r["last_attempt_at"]),
                "last_status": r["last_status"],
                "last_error": r["last_error"],
                "consecutive_failures": r["consecutive_failures"],
            }
            for r in runs
        ],
        "pending": pending["pending"],
        "failed": [
            {"id": str(f["id"]), "calendar_id": f["calendar_id"], "google_event_id": f["google_event_id"], "title": f["title"],
             "reason": f["sync_error"], "tries": f["sync_retries"]}
            for f in failed
        ],
        "failed_total": failed_total,
        "conflicts_this_week": conflicts,
        "active_channels": channels,
        "push_channels": [
            {"calendar_id": cal, "expires_at": _iso(c["expires_at"]), "address": c["address"],
             "notification_pending_since": _iso(notified.get(cal))}
            for cal, c in push.items()
        ],
    }
