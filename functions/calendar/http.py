"""The ``calendar_sync`` and ``calendar_notify`` HTTP targets.

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
``calendar_notify`` answers Google's push notifications (its own auth: the
channel token, checked here).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from safesync.shared.config import Settings
from safesync.shared.errors import BadRequest
from safesync.shared.http import Call, json_response, validate_body
from safesync.shared.runner import Answer

from . import ratelimit, reads
from .jobs import status_answer
from .notify import handle_notification
from .sync import MODES, run_sync
from .watch import watch

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


def handle_notify_call(call: Call) -> Answer:
    """The ``calendar_notify`` target: the spine only checked that channel
    headers are present; the channel token is verified here."""
    return handle_notification(call.settings, call.headers)
