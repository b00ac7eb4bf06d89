"""What the status page and ``GET /status`` show, gathered from storage and
the calendar database; each part fails on its own, never the whole answer.

- per backed-up database: the last backup (age, size, verified, drill), any
  backup damaged or failing verification, and the timeline (kept by which retention rule, sizes, last verify and drill);
- the last run of every job and action (each not ``ok`` is a reason until
  that job and action next ends ``ok``), and the last content sync's
  written rows and conflicts;
- calendar health with each calendar's push-channel expiry (the calendar
  job judges it: expiring within its renewal margin is degraded);
- storage used;
- ``health`` = ok | degraded | failing, and ``reasons``: what needs
  attention, the failing ones first.

A backup older than ``STALE_BACKUP_H`` notifies ``SAFESYNC_NOTIFY_URL`` once
per backup, no complete backup at all once per database and UTC day (a
marker object records each): the only writes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from safesync.functions import registry
from safesync.shared import notify, runs
from safesync.shared.config import Settings
from safesync.shared.errors import SafesyncError
from safesync.shared.log import redact

STALE_BACKUP_H = 26
SYNC_LOOKBACK = 50  # reports read to find the last content sync among compares and dry-runs
RUN_OUTCOMES = {"problems": "found problems", "refused": "refused", "failed": "failed"}  # a report's status, as a reason says it


def last_runs(settings: Settings) -> list[dict[str, Any]]:
    """The newest run of each job and action: a sync that failed stays a
    reason until a sync succeeds, whatever compares ran after it. A job's
    newest record stands for its action when that action has no kept
    outcome (runs stored by an older version)."""
    rows = []
    for job in registry.RUN_FOLDERS:
        outcomes = {o.get("action"): o for o in runs.last_of_each_action(settings, job)}
        newest = next(runs.newest_first(settings, job, 1), None)
        if newest is not None and newest.get("action") not in outcomes:
            outcomes[newest.get("action")] = newest
        for action in sorted(outcomes, key=str):
            outcome = outcomes[action]
            rows.append({"job": job, "action": action, **{k: outcome.get(k) for k in ("status", "finished_at", "summary")}})
    return rows


def last_content_sync(settings: Settings) -> dict[str, Any] | None:
    """The newest content sync that was meant to write (``sync``): per table
    rows written and deleted, and the conflicts it met."""
    for report in runs.newest_first(settings, "content_sync", SYNC_LOOKBACK):
        if report.get("action") != "sync":
            continue
        tables = [t for t in (report.get("tables") or {}).get("tables") or [] if isinstance(t, dict)]
        return {
            "run_id": report.get("run_id"),
            "finished_at": report.get("finished_at"),
            "status": report.get("status"),
            "summary": report.get("summary"),
            "written": sum(int(t.get("written") or 0) for t in tables),
            "deleted": sum(int(t.get("deleted") or 0) for t in tables),
            "conflicts": sum(int(t.get("conflicts") or 0) for t in tables),
            "tables": [
                {k: t.get(k, 0) for k in ("table", "new", "changed", "written", "deleted", "conflicts")}
                for t in tables
            ],
        }
    return None


def last_backups(settings: Settings, reasons: list[str]) -> list[dict[str, Any]]:
    from safesync.functions.backup import backup_catalog

    rows = []
    for db in settings.config.backup.databases:
        catalog = backup_catalog(settings, db)  # one scan for all three
        for damaged in catalog.damaged:
            reasons.append(f"degraded: backup {damaged.id} of {db} is damaged ({damaged.problem})")
        # any backup still kept, not only the newest: retention may keep the
        # one that failed as the only restore point of its month
        for kept in reversed(catalog.complete):
            if kept.verification and not kept.verification.get("ok"):
                problems = "; ".join(str(p) for p in kept.verification.get("problems") or []) or "no detail"
                reasons.append(f"degraded: backup {kept.id} of {db} failed verification ({problems})")
        info = catalog.newest_full
        if info is None:
            reasons.append(f"failing: no complete backup of {db}")
            # no backup to key the marker by: once per UTC day while it lasts
            day = datetime.now(timezone.utc).strftime("%Y%m%d")
            _notify_once(settings, f"status/missing-notified/{db}/{day}.json", "backup.missing", f"no complete backup of {db}", {"db": db})
            rows.append({"db": db, "id": None, "age": "never"})
            continue
        age_h = info.age_s() / 3600
        row = {"db": db, **info.row(), "age_h": round(age_h, 1)}
        if age_h > STALE_BACKUP_H:
            reasons.append(f"failing: last backup of {db} is {age_h:.0f} h old")
            _notify_once(settings, f"status/stale-notified/{info.id}.json", "backup.stale", f"last backup of {db} is {age_h:.0f} h old ({info.id})",
                         {"db": db, "backup": info.id, "age_h": round(age_h, 1)})
        rows.append(row)
    return rows


def timelines(settings: Settings, reasons: list[str]) -> list[dict[str, Any]]:
    from safesync.functions.backup import backup_timeline

    found = []
    for db in settings.config.backup.databases:
        line = backup_timeline(settings, db)
        drill = line["last_drill"]
        if drill is not None and not drill["ok"]:
            reasons.append(f"degraded: the last restore drill of {db} ({drill['backup']}) failed")
        found.append(line)
    return found


def _notify_once(settings: Settings, marker: str, event: str, text: str, fields: dict[str, Any]) -> None:
    """Notify unless ``marker`` says it was done; the marker is written only
    once the notice was delivered, so a failed delivery is tried again."""
    if settings.storage.exists(marker):
        return
    if notify.send(event, text, fields):
        settings.storage.put_json(marker, {**fields, "event": event, "notified_at": datetime.now(timezone.utc)})


def calendar_health(settings: Settings, reasons: list[str]) -> dict[str, Any] | None:
    if "calendar" not in settings.config.model_fields_set:
        return None
    from safesync.functions.calendar import calendar_status

    health = calendar_status(settings)
    if health.get("health") in ("degraded", "failing"):  # push channels expiring or gone included
        reasons.append(f"{health['health']}: calendar: {health.get('reason', '')}")
    return health


def storage_used(settings: Settings) -> dict[str, Any]:
    objects = settings.storage.list("")
    return {"objects": len(objects), "bytes": sum(o.size for o in objects), "url": settings.storage.describe()}


def collect(settings: Settings) -> dict[str, Any]:
    reasons: list[str] = []
    parts: dict[str, Any] = {}
    steps: tuple[tuple[str, Callable[[], Any]], ...] = (
        ("backups", lambda: last_backups(settings, reasons)),
        ("timeline", lambda: timelines(settings, reasons)),
        ("runs", lambda: last_runs(settings)),
        ("content_sync", lambda: last_content_sync(settings)),
        ("calendar", lambda: calendar_health(settings, reasons)),
        ("storage", lambda: storage_used(settings)),
    )
    for key, fn in steps:
        try:
            parts[key] = fn()
        except SafesyncError as exc:
            parts[key] = {"error": redact(exc.message)}
            reasons.append(f"degraded: {key}: {redact(exc.message)}")
    for run in parts.get("runs") or []:
        # anything but "ok" needs a look: "problems" is a run that found
        # something wrong (validation findings, a backup failing verification)
        if run["status"] != "ok":
            outcome = RUN_OUTCOMES.get(run["status"], f"ended {run['status']!r}")
            reasons.append(f"degraded: last {run['job']} {run['action']} {outcome}: {run['summary']}")
    # What needs attention first: failing before degraded, each in the order found.
    reasons.sort(key=lambda r: not r.startswith("failing"))
    health = "failing" if any(r.startswith("failing") for r in reasons) else "degraded" if reasons else "ok"
    return {"health": health, "reasons": reasons, **parts}
