"""``status``: is all well? One glance, as JSON or as a small HTML page.

Shows the last backup of every backed-up database (age, size, verified,
restore drill), the last run of every job, calendar health, the last doctor
result and the storage used; ``health`` is ok | degraded | failing with the
reasons. A backup older than ``STALE_BACKUP_H`` notifies
``SAFESYNC_NOTIFY_URL`` once per backup (a marker object records it).

Read-only apart from that marker; it takes no lock.
"""

from __future__ import annotations

import argparse
import html
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict

from safesync.shared import notify
from safesync.shared.config import Settings
from safesync.shared.errors import SafesyncError
from safesync.shared.http import Call, validate_body
from safesync.shared.log import redact
from safesync.shared.report import Answer, Report
from safesync.shared.runner import execute

JOBS = ("backup", "content_sync", "staging_clone", "validate", "calendar", "migrate", "doctor")
STALE_BACKUP_H = 26


def last_runs(settings: Settings) -> list[dict[str, Any]]:
    """The newest stored report of each job."""
    rows = []
    for job in JOBS:
        runs = settings.storage.list(f"runs/{job}/")
        if not runs:
            continue
        # Names sort by second; runs within the newest second are told apart by their finish time.
        newest_second = runs[-1].key.rsplit("/", 1)[-1].split("-", 1)[0]
        candidates = [settings.storage.get_json(r.key) for r in runs if r.key.rsplit("/", 1)[-1].startswith(newest_second)]
        latest = max(candidates, key=lambda report: str(report.get("finished_at") or ""))
        rows.append(
            {
                "job": job,
                "action": latest.get("action"),
                "status": latest.get("status"),
                "finished_at": latest.get("finished_at"),
                "summary": latest.get("summary"),
            }
        )
    return rows


def last_backups(settings: Settings, reasons: list[str]) -> list[dict[str, Any]]:
    from safesync.functions.backup import latest_backup

    rows = []
    for db in settings.config.backup.databases:
        info = latest_backup(settings, db)
        if info is None:
            reasons.append(f"failing: no complete backup of {db}")
            rows.append({"db": db, "id": None, "age": "never"})
            continue
        age_h = info.age_s() / 3600
        row = {"db": db, **info.row(), "age_h": round(age_h, 1)}
        if age_h > STALE_BACKUP_H:
            reasons.append(f"failing: last backup of {db} is {age_h:.0f} h old")
            _notify_stale_once(settings, db, info.id, age_h)
        elif info.verification and not info.verification.get("ok"):
            reasons.append(f"degraded: last backup of {db} failed verification")
        rows.append(row)
    return rows


def _notify_stale_once(settings: Settings, db: str, backup_id: str, age_h: float) -> None:
    marker = f"status/stale-notified/{backup_id}.json"
    if settings.storage.exists(marker):
        return
    if notify.send("backup.stale", f"last backup of {db} is {age_h:.0f} h old ({backup_id})", {"db": db, "backup": backup_id, "age_h": round(age_h, 1)}):
        settings.storage.put_json(marker, {"db": db, "backup": backup_id, "notified_at": datetime.now(timezone.utc)})


def calendar_health(settings: Settings, reasons: list[str]) -> dict[str, Any] | None:
    if "calendar" not in settings.config.model_fields_set:
        return None
    from safesync.functions.calendar import calendar_status

    health = calendar_status(settings)
    if health.get("health") in ("degraded", "failing"):
        reasons.append(f"{health['health']}: calendar: {health.get('reason', '')}")
    return health


def storage_used(settings: Settings) -> dict[str, Any]:
    objects = settings.storage.list("")
    return {"objects": len(objects), "bytes": sum(o.size for o in objects), "url": settings.storage.describe()}


def collect(settings: Settings) -> dict[str, Any]:
    """Everything the page shows; each part fails on its own, never the page."""
    reasons: list[str] = []
    parts: dict[str, Any] = {}
    for key, fn in (
        ("backups", lambda: last_backups(settings, reasons)),
        ("runs", lambda: last_runs(settings)),
        ("calendar", lambda: calendar_health(settings, reasons)),
        ("storage", lambda: storage_used(settings)),
    ):
        try:
            parts[key] = fn()
        except SafesyncError as exc:
            parts[key] = {"error": redact(exc.message)}
            reasons.append(f"degraded: {key}: {redact(exc.message)}")
    for run in parts.get("runs") or []:
        if run["status"] in ("failed", "refused"):
            reasons.append(f"degraded: last {run['job']} {run['action']} {run['status']}: {run['summary']}")
    health = "failing" if any(r.startswith("failing") for r in reasons) else "degraded" if reasons else "ok"
    return {"health": health, "reasons": reasons, **parts}


def status(settings: Settings) -> Answer:
    def job(report: Report) -> None:
        data = collect(settings)
        report.details.update(data)
        report.tables["backups"] = data.get("backups") if isinstance(data.get("backups"), list) else []
        report.tables["last runs"] = data.get("runs") if isinstance(data.get("runs"), list) else []
        if data["health"] == "ok":
            report.summary = "all is well"
        else:
            report.problems(f"{data['health']}: " + "; ".join(r.split(": ", 1)[1] for r in data["reasons"]))

    return execute(settings, Report("status", "show"), job, record=False)


def render_html(body: dict[str, Any]) -> str:
    """A small self-contained page: no scripts, everything escaped."""
    details = body.get("details", {})
    health = details.get("health", "failing" if body.get("error") else "unknown")
    colour = {"ok": "#1a7f37", "degraded": "#9a6700", "failing": "#cf222e"}.get(health, "#57606a")

    def table(title: str, rows: Any) -> str:
        if not isinstance(rows, list) or not rows:
            return f"<h2>{html.escape(title)}</h2><p>none</p>"
        columns = list(dict.fromkeys(k for row in rows for k in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        lines = "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '') if row.get(c) is not None else ''))}</td>" for c in columns) + "</tr>" for row in rows)
        return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{lines}</table>"

    calendar = details.get("calendar")
    storage = details.get("storage") or {}
    parts = [
        f'<h1>safesync <span style="color:{colour}">{html.escape(health)}</span></h1>',
        "<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in details.get("reasons", [])) + "</ul>",
        table("Last backup per database", details.get("backups")),
        table("Last run of every job", details.get("runs")),
    ]
    if isinstance(calendar, dict):
        parts.append(f"<h2>Calendar</h2><p>{html.escape(str(calendar.get('health', '')))} {html.escape(str(calendar.get('reason', '')))} — pending {calendar.get('pending', 0)}, failed {len(calendar.get('failed') or [])}</p>")
    if isinstance(storage, dict) and "bytes" in storage:
        parts.append(f"<h2>Storage</h2><p>{html.escape(str(storage['url']))}: {storage['objects']} objects, {storage['bytes'] / 1e6:.1f} MB</p>")
    if body.get("error"):
        parts.append(f"<p>error: {html.escape(str(body['error']))}</p>")
    style = "body{font:14px system-ui;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left}"
    return f"<!doctype html><html><head><meta charset=utf-8><title>safesync status: {html.escape(health)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"


class _Body(BaseModel):
    """status takes no parameters; anything else is a mistake worth a 400."""

    model_config = ConfigDict(extra="forbid")


def handle_http(call: Call):
    validate_body(_Body, call.body)
    answer = status(call.settings)
    if "text/html" in call.headers.get("Accept", ""):
        import flask

        return flask.Response(render_html(answer.body), status=200 if answer.status < 500 else answer.status, mimetype="text/html")
    return answer


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", help="is all well? last backups, last runs, calendar health, storage", parents=[parent])
    p.set_defaults(func=lambda args, settings: status(settings))
