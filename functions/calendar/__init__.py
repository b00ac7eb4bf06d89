"""``calendar_sync``: two-way Google Calendar sync, status, events read API,
push notifications.

HTTP (POST JSON; GET with query args for the read actions):

- ``{"mode": "incremental"|"full"|"cleanup"}`` — a sync run (409 if one runs);
- ``{"action": "status"}`` — health, last success per mode, pending, failed;
- ``{"action": "events", "from": ..., "to": ...}`` — read a window, with
  ``ETag``, ``Cache-Control: max-age=300`` and 304 on ``If-None-Match``;
- ``{"action": "watch"}`` — open/renew push channels, stop old ones;
- admin token only: ``{"action": "resync"}`` (Google's full
  synchronization: the token dropped, every event listed without bounds;
  ``"force": true`` also lifts the mass-deletion guard), ``{"action": "retry_all"}``
  (every ``sync_failed`` row gets fresh tries), and ``force`` on any sync.

Every call counts against the caller's per-minute rate limit (429).
Google's notifications are answered by ``handle_notify`` (its own auth: the
channel token).
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from safesync.shared.config import Settings
from safesync.shared.errors import BadRequest
from safesync.shared.http import Call, json_response, validate_body
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from . import ratelimit, reads
from .status import calendar_status
from .sync import JOB, MODES, run_sync
from .notify import handle_notification
from .watch import watch

__all__ = ["handle_http", "handle_notify", "handle_notify_call", "register_cli", "calendar_status"]

ADMIN_ACTIONS = ("resync", "retry_all")
READ_ACTIONS = ("status", "events")


class CalendarBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    action: Literal["sync", "status", "events", "watch", "resync", "retry_all"] | None = None
    mode: Literal["incremental", "full", "cleanup"] | None = None
    from_: str | None = Field(None, alias="from")
    to: str | None = None
    calendar_id: str | None = None
    force: bool = False


def status_answer(settings: Settings) -> Answer:
    def job(report: Report) -> None:
        info = calendar_status(settings)
        report.details.update(info)
        report.tables["calendars"] = info["calendars"]
        if info["failed"]:
            report.tables["failed events"] = info["failed"]
        if info["health"] == "ok":
            report.summary = f"ok: {info['reason']}; {info['pending']} pending, {info['conflicts_this_week']} conflict(s) this week"
        else:
            report.problems(f"{info['health']}: {info['reason']}")

    return execute(settings, Report(JOB, "status"), job, record=False, needs_storage=False)


def events_response(settings: Settings, start: str | None, end: str | None, if_none_match: str | None):
    """The read action's HTTP response (a Flask response: it needs headers)."""
    import flask

    window = reads.check_window(settings, start, end)
    etag, body, hit = reads.read_events(settings, *window)
    headers = {"ETag": etag, "Cache-Control": reads.CACHE_CONTROL, "X-Cache": "hit" if hit else "miss"}
    if reads.etag_matches(if_none_match, etag):
        response = flask.Response(status=304)
        for key, value in headers.items():
            response.headers[key] = value
        return response
    return json_response(200, body, headers)


def handle_http(call: Call):
    body: dict[str, Any] = call.body if call.method == "POST" else dict(call.args)
    request = validate_body(CalendarBody, body)
    action = request.action or ("sync" if request.mode else None)
    if action is None:
        raise BadRequest(f"body: give mode ({'|'.join(MODES)}) or action (status|events|watch|resync|retry_all)")
    if call.method != "POST" and action not in READ_ACTIONS:
        raise BadRequest(f"action {action!r} changes data: use POST")
    if action == "sync" and request.mode is None:
        raise BadRequest("mode: required for action sync")
    if action in ADMIN_ACTIONS or request.force:
        call.require_admin()
    settings = call.settings
    ratelimit.check(settings, call.principal.identity)
    trigger, delivery = call.trigger(), call.delivery
    if action == "status":
        return status_answer(settings)
    if action == "events":
        return events_response(settings, request.from_, request.to, call.headers.get("If-None-Match"))
    if action == "watch":
        return watch(settings, trigger, delivery)
    if action == "resync":
        return run_sync(settings, "full", trigger=trigger, delivery=delivery, force=request.force,
                        calendar_id=request.calendar_id, action="resync", resync=True)
    if action == "retry_all":
        return run_sync(settings, "incremental", trigger=trigger, delivery=delivery, calendar_id=request.calendar_id,
                        action="retry_all", reset_failed=True)
    return run_sync(settings, request.mode, trigger=trigger, delivery=delivery, force=request.force,
                    calendar_id=request.calendar_id)


def handle_notify(settings: Settings, headers) -> Answer:
    """Google push notifications (``X-Goog-Channel-*`` headers, no bearer):
    verified by channel token here, never by the bearer/QStash auth."""
    return handle_notification(settings, headers)


def handle_notify_call(call: Call) -> Answer:
    """The ``calendar_notify`` target: the spine only checked that channel
    headers are present; the channel token is verified here."""
    return handle_notification(call.settings, call.headers)


def _events_cli(args: argparse.Namespace, settings: Settings) -> Answer:
    window = reads.check_window(settings, args.from_, args.to)
    etag, body, _ = reads.read_events(settings, *window)
    report = Report(JOB, "events")

    def job(r: Report) -> None:
        r.details.update(etag=etag, count=body["count"])
        r.tables["events"] = [
            {k: e[k] for k in ("start", "end", "title", "status", "sync_status", "google_event_id")} for e in body["events"]
        ]
        r.summary = f"{body['count']} event(s) from {body['from']} to {body['to']}"

    return execute(settings, report, job, record=False, needs_storage=False)


def register_cli(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    group = sub.add_parser("calendar", help="two-way Google Calendar sync", parents=[parent])
    actions = group.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("sync", help="pull from Google, then push pending local changes", parents=[parent])
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--calendar", help="only this configured calendar id")
    p.add_argument("--force", action="store_true", help="lift the empty-listing / mass-deletion guards")
    p.add_argument("--retry-failed", action="store_true", help="give sync_failed rows fresh tries first")
    p.set_defaults(
        func=lambda args, settings: run_sync(
            settings, args.mode, force=args.force, calendar_id=args.calendar, reset_failed=args.retry_failed
        )
    )

    p = actions.add_parser("status", help="health, last success per mode, pending and failed events", parents=[parent])
    p.set_defaults(func=lambda args, settings: status_answer(settings))

    p = actions.add_parser("events", help="events in a window (YYYY-MM-DD or RFC 3339 bounds)", parents=[parent])
    p.add_argument("--from", dest="from_", required=True)
    p.add_argument("--to", required=True)
    p.set_defaults(func=_events_cli)

    p = actions.add_parser("watch", help="open/renew Google push channels, stop old ones", parents=[parent])
    p.set_defaults(func=lambda args, settings: watch(settings))
