"""Google push channels: one ``events.watch`` channel per calendar.

``ensure_channels`` (the ``watch`` action; infra/schedules.toml runs it every
6 h) opens a channel when none is active, when the newest expires within
``channel_renew_hours``, or when it points at another address than the
current one; then it stops the older ones, and every channel of a calendar
no longer in ``calendar_ids``. Google never renews a channel
("there is no automatic way to renew a notification channel"): a channel
nobody replaces stops notifying at its expiration. Each channel has its own
random token; only its SHA-256 is stored. Notifications are answered by
``notify.py``.

The address is the service that answers ``calendar_notify``:
``calendar.notify_url`` if set, else ``SAFESYNC_NOTIFY_PUBLIC_URL`` (the
calendar_notify service's URL; infra/deploy.sh sets it on calendar_sync),
else ``SAFESYNC_PUBLIC_URL`` (``safesync serve``: every target on one host),
followed by ``/calendar_notify``.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from psycopg.rows import dict_row

from safesync.shared.config import Settings
from safesync.shared.delivery import Delivery
from safesync.shared.errors import ConfigError, JobFailed
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from . import state
from .google import CalendarClient
from .notify import token_digest
from .pull import api_failure
from .retry import classify
from .sync import JOB, make_policy, sync_connection

NOTIFY_PATH = "/calendar_notify"


def notify_address(settings: Settings) -> str:
    cfg = settings.config.calendar
    base = settings.public("SAFESYNC_NOTIFY_PUBLIC_URL") or settings.public("SAFESYNC_PUBLIC_URL") or ""
    address = cfg.notify_url or (base.rstrip("/") + NOTIFY_PATH)
    if not address.startswith("https://"):
        raise ConfigError(
            "calendar.notify_url, SAFESYNC_NOTIFY_PUBLIC_URL or SAFESYNC_PUBLIC_URL must give an https:// URL "
            "of the calendar_notify target: Google only calls HTTPS webhooks"
        )
    return address


def ensure_channels(settings: Settings, report: Report) -> None:
    """Every configured calendar in turn; one whose Google calls fail does
    not keep the others from being renewed (their channels would lapse
    silently): the run then fails naming it."""
    cfg = settings.config.calendar
    address = notify_address(settings)
    client = CalendarClient(settings.env, timeout=cfg.http_timeout_s, scopes=cfg.scopes)
    policy = make_policy(settings)
    now = datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    errors: list[JobFailed] = []
    with sync_connection(settings) as conn:
        for cal in cfg.calendar_ids:
            try:
                rows.append(_renew(conn, client, policy, cal, address, cfg, now, report.run_id))
            except JobFailed as exc:
                errors.append(exc)
                rows.append({"calendar": cal, "channel": None, "action": "failed", "expires": None, "stopped": 0, "error": exc.message})
        try:
            rows.extend(_stop_unconfigured(conn, client, policy, cfg.calendar_ids, report.run_id))
        except JobFailed as exc:
            errors.append(exc)
    report.tables["channels"] = rows
    report.details["api_calls"] = dict(client.calls)
    report.summary = f"{sum(r['action'] == 'opened' for r in rows)} channel(s) opened, {sum(r['stopped'] for r in rows)} stopped"
    if errors:
        raise JobFailed("; ".join(e.message for e in errors), {"channels": rows})


def _renew(conn, client: CalendarClient, policy, cal: str, address: str, cfg, now: datetime, run_id: str) -> dict[str, Any]:
    """One calendar: a new channel unless the newest is fine, then the older ones stopped."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select * from calendar.channels where calendar_id = %s and stopped_at is null order by expiration desc nulls last",
            [cal],
        )
        active = cur.fetchall()
    newest = active[0] if active else None
    action = "kept"
    if (newest is None or newest["expiration"] is None or newest["address"] != address
            or newest["expiration"] - now < timedelta(hours=cfg.channel_renew_hours)):
        newest = _open(conn, client, policy, cal, address, cfg.channel_ttl_hours, run_id)
        action = "opened"
    stopped = 0
    for old in active:
        if old["id"] != newest["id"]:
            _stop(conn, client, policy, old, run_id)
            stopped += 1
    return {"calendar": cal, "channel": newest["id"], "action": action, "expires": newest["expiration"].isoformat(), "stopped": stopped}


def _stop_unconfigured(conn, client: CalendarClient, policy, calendar_ids: list[str], run_id: str) -> list[dict[str, Any]]:
    """Channels of calendars taken out of ``calendar_ids``: stopped, or
    Google keeps notifying us of a calendar nobody syncs until they expire."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "select * from calendar.channels where stopped_at is null and not (calendar_id = any(%s)) order by calendar_id, id",
            [calendar_ids],
        )
        orphans = cur.fetchall()
    stopped: dict[str, int] = {}
    for channel in orphans:
        _stop(conn, client, policy, channel, run_id)
        stopped[channel["calendar_id"]] = stopped.get(channel["calendar_id"], 0) + 1
    return [{"calendar": cal, "channel": None, "action": "stopped: calendar not configured", "expires": None, "stopped": n}
            for cal, n in stopped.items()]


def _open(conn, client: CalendarClient, policy, calendar_id: str, address: str, ttl_hours: int, run_id: str) -> dict[str, Any]:
    channel_id, token = str(uuid.uuid4()), secrets.token_urlsafe(32)
    body = {"id": channel_id, "type": "web_hook", "address": address, "token": token, "params": {"ttl": str(ttl_hours * 3600)}}
    try:
        response = policy.call(lambda: client.watch(calendar_id, body))
    except Exception as exc:
        raise api_failure(calendar_id, "events.watch", exc) from None
    expiration = (
        datetime.fromtimestamp(int(response["expiration"]) / 1000, timezone.utc)
        if response.get("expiration")
        else datetime.now(timezone.utc) + timedelta(hours=ttl_hours)
    )
    row = {"id": channel_id, "calendar_id": calendar_id, "resource_id": response.get("resourceId"),
           "token_sha256": token_digest(token), "address": address, "expiration": expiration}
    with conn.transaction():
        conn.execute(
            """insert into calendar.channels (id, calendar_id, resource_id, token_sha256, address, expiration)
               values (%(id)s, %(calendar_id)s, %(resource_id)s, %(token_sha256)s, %(address)s, %(expiration)s)""",
            row,
        )
        state.audit(conn, run_id, "state", "push channel opened", calendar_id=calendar_id,
                    detail={"channel": channel_id, "expiration": expiration.isoformat()})
    return row


def _stop(conn, client: CalendarClient, policy, channel: dict[str, Any], run_id: str) -> None:
    try:
        policy.call(lambda: client.stop_channel(channel["id"], channel["resource_id"]))
    except Exception as exc:
        failure = classify(exc)
        if failure.status != 404:  # 404: already expired or stopped on Google's side
            raise api_failure(channel["calendar_id"], "channels.stop", exc) from None
    with conn.transaction():
        conn.execute("update calendar.channels set stopped_at = now() where id = %s", [channel["id"]])
        state.audit(conn, run_id, "state", "push channel stopped", calendar_id=channel["calendar_id"], detail={"channel": channel["id"]})


def watch(settings: Settings, trigger: dict[str, Any] | None = None, delivery: Delivery | None = None) -> Answer:
    report = Report(JOB, "watch", trigger=trigger or {"via": "cli"})
    return execute(settings, report, lambda r: ensure_channels(settings, r), target=settings.config.calendar.database, delivery=delivery)
