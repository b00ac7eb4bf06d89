"""Google push notifications: one ``events.watch`` channel per calendar.

- ``ensure_channels`` (the ``watch`` action, run it every few hours) opens a
  channel when none is active or the newest expires within
  ``channel_renew_hours``, then stops the older ones. Each channel has its own
  random token; only its SHA-256 is stored.
- ``handle_notification`` verifies a notification (known channel, token,
  resource id) and triggers a debounced incremental sync: at most one per
  ``notify_debounce_s`` per calendar; a notification inside that interval only
  marks the calendar pending (the next notification or the hourly schedule
  picks it up — the scheduled syncs stay the safety net).
- Google sends notifications without our bearer or QStash signature, so this
  handler is its own authentication: anything unverifiable is 401.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from psycopg.rows import dict_row

from safesync.shared.config import Settings
from safesync.shared.delivery import Delivery
from safesync.shared.errors import AlreadyRunning, AuthError, ConfigError, SafesyncError
from safesync.shared.report import Report
from safesync.shared.runner import Answer, execute

from . import state
from .google import CalendarClient
from .pull import api_failure
from .retry import classify
from .sync import JOB, make_policy, sync_connection, run_sync

NOTIFY_PATH = "/calendar_notify"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def notify_address(settings: Settings) -> str:
    cfg = settings.config.calendar
    address = cfg.notify_url or ((settings.env.get("SAFESYNC_PUBLIC_URL") or "").rstrip("/") + NOTIFY_PATH)
    if not address.startswith("https://"):
        raise ConfigError("calendar.notify_url (or SAFESYNC_PUBLIC_URL) must be an https:// URL: Google only calls HTTPS webhooks")
    return address


def ensure_channels(settings: Settings, report: Report) -> None:
    cfg = settings.config.calendar
    address = notify_address(settings)
    client = CalendarClient(settings.env, timeout=cfg.http_timeout_s)
    policy = make_policy(settings)
    now = datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    with sync_connection(settings) as conn:
        for cal in cfg.calendar_ids:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    "select * from calendar.channels where calendar_id = %s and stopped_at is null order by expiration desc nulls last",
                    [cal],
                )
                active = cur.fetchall()
            newest = active[0] if active else None
            action = "kept"
            if newest is None or newest["expiration"] is None or newest["expiration"] - now < timedelta(hours=cfg.channel_renew_hours):
                newest = _open(conn, client, policy, cal, address, cfg.channel_ttl_hours, report.run_id)
                action = "opened"
            stopped = 0
            for old in active:
                if old["id"] != newest["id"]:
                    _stop(conn, client, policy, old, report.run_id)
                    stopped += 1
            rows.append({"calendar": cal, "channel": newest["id"], "action": action, "expires": newest["expiration"].isoformat(), "stopped": stopped})
    report.tables["channels"] = rows
    report.details["api_calls"] = dict(client.calls)
    report.summary = f"{sum(r['action'] == 'opened' for r in rows)} channel(s) opened, {sum(r['stopped'] for r in rows)} stopped"


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
           "token_sha256": _digest(token), "address": address, "expiration": expiration}
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


def handle_notification(settings: Settings, headers: Mapping[str, str]) -> Answer:
    """Answer one Google push notification (always 200 once verified, so
    Google does not retry what we already recorded)."""
    channel_id = headers.get("X-Goog-Channel-ID") or ""
    token = headers.get("X-Goog-Channel-Token") or ""
    resource_id = headers.get("X-Goog-Resource-ID") or ""
    resource_state = headers.get("X-Goog-Resource-State") or ""
    if not (channel_id and token and resource_state):
        raise AuthError("not a Google Calendar notification (X-Goog-Channel-* headers missing)")
    cfg = settings.config.calendar
    with sync_connection(settings) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute("select * from calendar.channels where id = %s", [channel_id])
            channel = cur.fetchone()
        valid = channel is not None and hmac.compare_digest(channel["token_sha256"], _digest(token))
        if not valid or (channel["resource_id"] and not hmac.compare_digest(channel["resource_id"], resource_id)):
            raise AuthError("unknown notification channel or wrong channel token")
        cal = channel["calendar_id"]
        base = {"channel": channel_id, "calendar_id": cal, "state": resource_state}
        if channel["stopped_at"] is not None:
            return Answer(200, {**base, "ignored": "channel stopped"})
        if resource_state == "sync":
            return Answer(200, {**base, "ignored": "channel handshake"})
        with conn.transaction():
            conn.execute(
                """insert into calendar.sync_state (calendar_id, notify_pending_since) values (%s, now())
                   on conflict (calendar_id) do update
                   set notify_pending_since = coalesce(calendar.sync_state.notify_pending_since, now())""",
                [cal],
            )
            recent = conn.execute(
                """select count(*) from calendar.sync_runs
                    where calendar_id = %s and mode = 'incremental' and last_attempt_at > now() - make_interval(secs => %s)""",
                [cal, cfg.notify_debounce_s],
            ).fetchone()[0]
    if recent:
        return Answer(200, {**base, "debounced": True})
    trigger = {"via": "google-push", "caller": f"channel:{channel_id}", "message_number": headers.get("X-Goog-Message-Number")}
    try:
        answer = run_sync(settings, "incremental", trigger=trigger, calendar_id=cal)
    except AlreadyRunning:
        return Answer(200, {**base, "debounced": True, "reason": "a sync is already running"})
    except SafesyncError as exc:  # recorded in sync_runs/status; Google must not retry-flood us
        return Answer(200, {**base, "synced": False, "error": exc.message})
    return Answer(200, {**base, "synced": answer.status == 200, "run": answer.body.get("run_id") or answer.body.get("report", {}).get("run_id")})
