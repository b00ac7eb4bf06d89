"""The Vercel deploy webhook → a ``predeploy`` backup.

Vercel signs the raw body (``x-vercel-signature``, checked by the HTTP layer
before we get here) and posts ``{"id", "type", "createdAt", "payload":
{"deployment": {"id", "url", "name", "meta"}, "target", "project": {"id"},
"links": {"deployment"}, ...}}``. Only ``deployment.created`` for target
``production`` makes a backup — of every database in ``backup.databases`` —
tagged with the deployment; any other event is answered 200 ``{"skipped"}``
so Vercel does not count it as a failed delivery. The event id de-duplicates
redeliveries. Vercel does not wait for webhooks: to *block* a deploy on the
backup, call the function from the build step instead (see the README).
"""

from __future__ import annotations

from typing import Any

from safesync.shared.errors import BadRequest
from safesync.shared.http import Call
from safesync.shared.report import Answer

from .jobs import run_create

MAX_FIELD = 300


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string")
    return value[:MAX_FIELD]


def deployment_trigger(event: dict[str, Any]) -> dict[str, Any] | str:
    """The trigger of a predeploy backup for this event, or why it is skipped."""
    kind = _text(event.get("type"), "type")
    payload = event.get("payload")
    if kind != "deployment.created":
        return f"event {kind!r} does not trigger a backup (only deployment.created does)"
    if not isinstance(payload, dict):
        raise BadRequest("payload: expected an object")
    target = _text(payload.get("target"), "payload.target")
    if target != "production":
        return f"deployment target is {target!r}; only production deployments are backed up"
    deployment = payload.get("deployment") or {}
    project = payload.get("project") or {}
    links = payload.get("links") or {}
    if not all(isinstance(x, dict) for x in (deployment, project, links)):
        raise BadRequest("payload.deployment, payload.project and payload.links must be objects")
    trigger = {
        "via": "vercel",
        "event_id": _text(event.get("id"), "id"),
        "deployment": _text(deployment.get("id"), "payload.deployment.id"),
        "deployment_url": _text(deployment.get("url"), "payload.deployment.url"),
        "project": _text(project.get("id"), "payload.project.id"),
        "inspect_url": _text(links.get("deployment"), "payload.links.deployment"),
    }
    return {k: v for k, v in trigger.items() if v is not None}


def handle_webhook(call: Call) -> Answer:
    settings, event = call.settings, call.body
    trigger = deployment_trigger(event)
    if isinstance(trigger, str):
        return Answer(200, {"ok": True, "skipped": trigger})
    if not settings.config.backup.databases:
        return Answer(200, {"ok": True, "skipped": "backup.databases is empty: nothing to back up"})
    answers = []
    for db in settings.config.backup.databases:
        # the event id is inside the signed body: a redelivered event replays (per database)
        delivery = call.delivery_keyed(trigger["event_id"]) if trigger.get("event_id") else None
        answers.append(run_create(settings, db, "predeploy", trigger=trigger, delivery=delivery))
    if len(answers) == 1:
        return answers[0]
    worst = max(answers, key=lambda a: a.status)
    body = {"ok": all(a.status < 300 and a.body.get("ok", True) for a in answers), "backups": [a.body for a in answers]}
    return Answer(worst.status, body, worst.exit_code, worst.permanent)
