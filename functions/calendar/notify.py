"""Google push notifications: acknowledged at once, synced asynchronously.

Google's push guide: a notification is a POST to the channel address; any
2xx acknowledges it, 5xx makes Google retry with backoff, anything else is a
failed message. So the answer must come quickly and must not depend on
Google or on a sync. ``handle_notification``:

1. verifies it (a channel we opened, its token, its resource id): else 401;
2. records it once, by channel and ``X-Goog-Message-Number`` (Google retries
   the same message; a replay is answered ``duplicate`` and does nothing);
3. marks the calendar pending and, unless a trigger is already queued,
   publishes one QStash message to ``calendar_sync`` (``{"mode":
   "incremental", "calendar_id": ...}``), delayed so that notification
   syncs start at most once per ``notify_debounce_s``.

No Google call, no sync and no advisory lock happen inside Google's request:
the sync runs in its own delivery, on the service with the long timeout.
Without ``QSTASH_TOKEN``, or when QStash does not answer within
``PUBLISH_TIMEOUT_S``, the calendar simply stays pending: the next scheduled
incremental sync picks it up (``status`` reports a pending notification
older than two hours).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any, Mapping

from psycopg.rows import dict_row

from safesync.shared.auth import same_text
from safesync.shared.config import Settings
from safesync.shared.db import connect
from safesync.shared.errors import AuthError, BadRequest, ConfigError
from safesync.shared.log import get_logger, redact
from safesync.shared.runner import Answer

from .schema import ensure_migrated, tables_required

log = get_logger("calendar.notify")

PUBLISH_TIMEOUT_S = 2.0
# A queued trigger that no sync consumed within this is presumed lost (a
# QStash message dropped): the next notification queues another.
QUEUE_STALE = timedelta(minutes=15)
SYNC_PATH = "/calendar_sync"


def token_digest(token: str) -> str:
    """What is stored of a channel token (the token itself never is)."""
    return hashlib.sha256(token.encode()).hexdigest()


def sync_destination(settings: Settings) -> str:
    """Where the triggered sync goes: the ``calendar_sync`` service
    (``SAFESYNC_CALENDAR_SYNC_BASE_URL``, set by infra/deploy.sh), else this
    server (``SAFESYNC_PUBLIC_URL``: ``safesync serve``, one domain)."""
    base = settings.public("SAFESYNC_CALENDAR_SYNC_BASE_URL") or settings.public("SAFESYNC_PUBLIC_URL")
    if not base:
        raise ConfigError("SAFESYNC_CALENDAR_SYNC_BASE_URL (or SAFESYNC_PUBLIC_URL) must name the calendar_sync service")
    return base.rstrip("/") + SYNC_PATH


def _message_number(headers: Mapping[str, str]) -> int:
    """The header as a number (ASCII digits only: ``str.isdigit`` also
    accepts "²", which ``int`` then refuses with a 500, and "١", which ``int``
    reads as 1 and so made a new message a "duplicate" of message 1)."""
    text = (headers.get("X-Goog-Message-Number") or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) < 1:
        raise BadRequest("X-Goog-Message-Number must be a positive integer")
    return int(text)


def publish(settings: Settings, token: str, calendar_id: str, delay_s: int) -> str:
    """One QStash message to calendar_sync; returns its message id."""
    import httpx
    from qstash import QStash

    client = QStash(token, retry=False, base_url=settings.public("QSTASH_URL"))
    # The SDK waits up to 600 s for QStash; Google is waiting for us.
    client.http._client.timeout = httpx.Timeout(PUBLISH_TIMEOUT_S)
    response = client.message.publish_json(
        url=sync_destination(settings),
        body={"mode": "incremental", "calendar_id": calendar_id},
        delay=delay_s or None,
        retries=3,
    )
    return response.message_id


def handle_notification(settings: Settings, headers: Mapping[str, str]) -> Answer:
    """Answer one Google push notification (200 once verified, so Google
    does not retry what is recorded)."""
    channel_id = headers.get("X-Goog-Channel-ID") or ""
    token = headers.get("X-Goog-Channel-Token") or ""
    resource_id = headers.get("X-Goog-Resource-ID") or ""
    resource_state = headers.get("X-Goog-Resource-State") or ""
    if not (channel_id and token and resource_state):
        raise AuthError("not a Google Calendar notification (X-Goog-Channel-* headers missing)")
    cfg = settings.config.calendar
    url = settings.database_url(cfg.database)
    with connect(url, autocommit=True, application_name="safesync-calendar-notify") as conn, tables_required(url, cfg.database):
        ensure_migrated(conn, url)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute("select * from calendar.channels where id = %s", [channel_id])
            channel = cur.fetchone()
        valid = channel is not None and same_text(channel["token_sha256"], token_digest(token))
        if not valid or (channel["resource_id"] and not same_text(channel["resource_id"], resource_id)):
            raise AuthError("unknown notification channel or wrong channel token")
        cal = channel["calendar_id"]
        base: dict[str, Any] = {"channel": channel_id, "calendar_id": cal, "state": resource_state}
        if channel["stopped_at"] is not None:
            return Answer(200, {**base, "ignored": "channel stopped"})
        if cal not in cfg.calendar_ids:
            # Taken out of the config (the next watch run stops the channel):
            # a queued sync would only be refused by calendar_sync.
            return Answer(200, {**base, "ignored": "calendar not configured"})
        if resource_state == "sync":
            return Answer(200, {**base, "ignored": "channel handshake"})
        number = _message_number(headers)
        with conn.transaction():
            fresh = conn.execute(
                """insert into calendar.notifications (channel_id, message_number, calendar_id, resource_state)
                   values (%s, %s, %s, %s) on conflict do nothing""",
                [channel_id, number, cal, resource_state[:32]],
            ).rowcount
            if not fresh:
                return Answer(200, {**base, "duplicate": True})
            conn.execute(
                """insert into calendar.sync_state (calendar_id, notify_pending_since, notify_last_at) values (%s, now(), now())
                   on conflict (calendar_id) do update
                   set notify_pending_since = coalesce(calendar.sync_state.notify_pending_since, now()), notify_last_at = now()""",
                [cal],
            )
            claim = conn.execute(
                """update calendar.sync_state set notify_queued_at = now()
                    where calendar_id = %(cal)s and (notify_queued_at is null or notify_queued_at < now() - %(stale)s)
                returning greatest(0, ceil(%(debounce)s - extract(epoch from now() - (
                    select max(last_attempt_at) from calendar.sync_runs where calendar_id = %(cal)s and mode = 'incremental'))))::int""",
                {"cal": cal, "stale": QUEUE_STALE, "debounce": cfg.notify_debounce_s},
            ).fetchone()
        if claim is None:
            return Answer(200, {**base, "queued": False, "pending": True, "reason": "a sync is already queued"})
        qstash_token = settings.secret("QSTASH_TOKEN")
        reason = "QSTASH_TOKEN is not set: the next scheduled incremental sync picks it up"
        if qstash_token:
            try:
                message_id = publish(settings, qstash_token, cal, claim[0])
                return Answer(200, {**base, "queued": True, "delay_s": claim[0], "message_id": message_id})
            except Exception as exc:  # QStash down or slow: the schedule is the safety net
                reason = f"QStash publish failed ({redact(str(exc))[:200]}): the next scheduled incremental sync picks it up"
                log.warning("calendar sync not queued", calendar_id=cal, error=reason)
        conn.execute("update calendar.sync_state set notify_queued_at = null where calendar_id = %s", [cal])
        return Answer(200, {**base, "queued": False, "pending": True, "reason": reason})
